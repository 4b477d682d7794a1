import json
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from accounts import services as accounts_services
from accounts.models import StaffApiToken, User
from shop import selectors, services
from shop.models import CardKey, Merchant, MerchantApiToken, MerchantStatus, Product

DEMO_PASSWORD = "demo-pass-123"  # noqa: S105 - printed for the demo on purpose
DEMO_TOKEN_NAME = "demo (seed_demo)"  # noqa: S105 - a label
PRODUCTS = [
    # title, price in minor units, currency, category, description
    ("Steam Wallet ¥100", 10000, "CNY", "game cards", "A ¥100 Steam wallet code, redeemable in mainland China."),
    ("App Store $25 gift card", 2500, "USD", "gift cards", "A US App Store & iTunes gift card."),
    ("Office 2021 Pro Plus licence", 19900, "CNY", "licences", "One lifetime licence key for one PC."),
]
KEYS_PER_PRODUCT = 25
DEMO_BACKUP_CODES = 5


def demo_token_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-merchant-token.txt"


def demo_staff_token_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-staff-token.txt"


def demo_backup_codes_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-backup-codes.json"


class Command(BaseCommand):
    help = "Create the demo merchant, products with stock, a buyer and a staff user (idempotent)."

    # No transaction around the whole run: each step is a service with its own (durable) transaction,
    # and each is skipped when its result is already there, so a run that stops half-way is finished
    # by the next one.
    def handle(self, *args, **options):
        now = timezone.now()
        merchant_user = self._user("merchant", "merchant@example.com")
        buyer = self._user("buyer", "buyer@example.com")
        staff = self._user("staff", "staff@example.com", is_staff=True, is_superuser=True)

        merchant = Merchant.objects.filter(user=merchant_user).first() or services.merchant_create(
            user=merchant_user,
            name="Demo Card Store",
            contact="merchant@example.com",
            now=now,
            status=MerchantStatus.APPROVED,
        )
        for title, price, currency, category, description in PRODUCTS:
            product = Product.objects.filter(merchant=merchant, title=title).first() or services.product_create(
                merchant=merchant,
                title=title,
                price=price,
                currency=currency,
                now=now,
                category=category,
                description=description,
            )
            if not CardKey.objects.filter(product=product).exists():
                keys = [
                    f"DEMO-{secrets.token_hex(2).upper()}-{secrets.token_hex(4).upper()}"
                    for _ in range(KEYS_PER_PRODUCT)
                ]
                services.keys_import_batch(product=product, keys=keys, now=now)
        token = self._demo_token(merchant, now)
        staff_token = self._demo_staff_token(staff, now)
        two_factor = self._demo_two_factor({"merchant": merchant_user, "staff": staff}, now)

        self.stdout.write(f"Demo data is ready. Logins (password for all: {DEMO_PASSWORD}):")
        for role, user in (("merchant", merchant_user), ("buyer", buyer), ("staff", staff)):
            self.stdout.write(f"  {role:<9} {user.username}")
        self.stdout.write(f"Demo merchant API token, every scope (header 'Authorization: Token …'): {token}")
        self.stdout.write(f"Demo staff API token (disputes arbitration, same header): {staff_token}")
        self.stdout.write("Merchant and staff sign-ins then ask for a code: add the URI to an authenticator app,")
        self.stdout.write("or use a backup code (each works once):")
        for role, (uri, codes) in two_factor.items():
            self.stdout.write(f"  {role:<9} {uri}")
            self.stdout.write(f"  {'':<9} backup codes: {' '.join(codes)}")

    def _demo_token(self, merchant: Merchant, now) -> str:
        """The database keeps only a token's hash, so the demo token's secret is kept in var/ (ignored by
        git, like var/local.env); a rerun prints the same token, and makes a new one if the file is gone
        or no longer matches an active token."""
        path = demo_token_file()
        if path.exists():
            saved = path.read_text().strip()
            found = selectors.api_token_active(token=saved)
            if found is not None and found.merchant_id == merchant.pk:
                return saved
        for stale in MerchantApiToken.objects.filter(merchant=merchant, name=DEMO_TOKEN_NAME, revoked_at=None):
            services.merchant_api_token_revoke(token=stale, actor=None, now=now)
        _record, token = services.merchant_api_token_create_unchecked(
            merchant=merchant, name=DEMO_TOKEN_NAME, actor=None, now=now
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token

    def _demo_staff_token(self, staff: User, now) -> str:
        """The staff user's API token, kept in var/ like the merchant's (a rerun prints the same one)."""
        path = demo_staff_token_file()
        if path.exists():
            saved = path.read_text().strip()
            found = accounts_services.staff_api_token_active(token=saved)
            if found is not None and found.user_id == staff.pk:
                return saved
        for stale in StaffApiToken.objects.filter(user=staff, name=DEMO_TOKEN_NAME, revoked_at=None):
            accounts_services.staff_api_token_revoke(token=stale, actor=None, now=now)
        _record, token = accounts_services.staff_api_token_create_unchecked(user=staff, name=DEMO_TOKEN_NAME, now=now)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token

    def _demo_two_factor(self, users: dict[str, User], now) -> dict[str, tuple[str, list[str]]]:
        """Each user's TOTP device (its otpauth:// URI) and their still-unused demo backup codes.

        The database keeps the backup codes, but the demo's plaintext copy lives in var/ (ignored by
        git, mode 600) so a rerun prints the same codes; when the file is gone or all its codes are
        used, new codes replace the old."""
        path = demo_backup_codes_file()
        try:
            saved = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            saved = {}
        result = {}
        for role, user in users.items():
            device = accounts_services.totp_device_provision_unchecked(user=user, now=now)
            codes = accounts_services.backup_codes_unused(user=user, codes=list(saved.get(user.username, [])))
            if not codes:
                codes = accounts_services.backup_codes_issue_unchecked(user=user, count=DEMO_BACKUP_CODES, now=now)
            saved[user.username] = codes
            result[role] = (device.config_url, codes)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=2) + "\n")
        path.chmod(0o600)
        return result

    def _user(self, username: str, email: str, **flags) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, email=email, password=DEMO_PASSWORD, **flags)
        return user
