import json
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from accounts import services as accounts_services
from accounts.models import StaffApiToken, User
from shop import selectors, services
from shop.models import (
    CardKey,
    CardKeyStatus,
    Category,
    Coupon,
    CouponKind,
    Merchant,
    MerchantApiToken,
    MerchantStatus,
    Product,
)

DEMO_PASSWORD = "demo-pass-123"  # noqa: S105 - printed for the demo on purpose
DEMO_TOKEN_NAME = "demo (seed_demo)"  # noqa: S105 - a label
PRODUCTS = [
    # title, price in minor units, currency, category slug, description
    ("Steam Wallet ¥100", 10000, "CNY", "game-cards", "A ¥100 Steam wallet code, redeemable in mainland China."),
    ("App Store $25 gift card", 2500, "USD", "gift-cards", "A US App Store & iTunes gift card."),
    ("Office 2021 Pro Plus licence", 19900, "CNY", "licences", "One lifetime licence key for one PC."),
]
# Wholesale tiers of the first product (10 or more at ¥95.00 each) and a shop-wide coupon, to try both.
DEMO_TIERS = [[10, 9500]]
DEMO_COUPON = "WELCOME10"  # 10 % off anything of the demo merchant's
# The staff-defined catalogue sections: slug, English name, Chinese name, position.
CATEGORIES = [
    ("game-cards", "Game cards", "游戏点卡", 1),
    ("gift-cards", "Gift cards", "礼品卡", 2),
    ("licences", "Software licences", "软件授权", 3),
    ("memberships", "Memberships", "会员", 4),
]
KEYS_PER_PRODUCT = 25
DEMO_BACKUP_CODES = 5


MAX_MERCHANTS = 50


def demo_token_file(number: int = 1) -> Path:
    """Merchant 1's token file keeps its old name; the others (`--merchants N`) get their own."""
    return Path(settings.VAR_DIR) / ("demo-merchant-token.txt" if number == 1 else f"demo-merchant{number}-token.txt")


def demo_staff_token_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-staff-token.txt"


def demo_backup_codes_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-backup-codes.json"


class Command(BaseCommand):
    help = (
        "Create the demo merchant(s), products with stock, a buyer and a staff user (idempotent). "
        "--json prints them (passwords, OTP URIs, backup codes, API tokens) as one JSON object for scripts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json",
            action="store_true",
            help='print one JSON object: {"users": [{"role", "username", "email", "password", "otpauth", '
            '"backup_codes", "token"}], "products": [{"id", "merchant", "title", "stock"}]}',
        )
        parser.add_argument(
            "--merchants",
            type=int,
            default=1,
            help=f"approved demo merchants, each with the demo products in stock (default 1, at most {MAX_MERCHANTS})",
        )

    # No transaction around the whole run: each step is a service with its own (durable) transaction,
    # and each is skipped when its result is already there, so a run that stops half-way is finished
    # by the next one.
    def handle(self, *args, **options):
        count = options["merchants"]
        if not 1 <= count <= MAX_MERCHANTS:
            raise CommandError(f"--merchants must be between 1 and {MAX_MERCHANTS}, not {count}.")
        now = timezone.now()
        merchant_users = [
            self._user(f"merchant{'' if n == 1 else n}", f"merchant{'' if n == 1 else n}@example.com")
            for n in range(1, count + 1)
        ]
        buyer = self._user("buyer", "buyer@example.com")
        staff = self._user("staff", "staff@example.com", is_staff=True, is_superuser=True)

        merchants = [self._merchant(user, number, now) for number, user in enumerate(merchant_users, start=1)]
        products = [product for merchant in merchants for product in self._products(merchant, now)]
        tokens = [self._demo_token(merchant, now, number=n) for n, merchant in enumerate(merchants, start=1)]
        staff_token = self._demo_staff_token(staff, now)
        two_factor = self._demo_two_factor({user.username: user for user in merchant_users} | {"staff": staff}, now)
        if options["json"]:
            self._json_print(merchant_users, buyer, staff, tokens, staff_token, two_factor, products)
            return
        merchant_user, token = merchant_users[0], tokens[0]

        self.stdout.write(f"Demo data is ready. Logins (password for all: {DEMO_PASSWORD}):")
        for role, user in (("merchant", merchant_user), ("buyer", buyer), ("staff", staff)):
            self.stdout.write(f"  {role:<9} {user.username}")
        for user, other_token in zip(merchant_users[1:], tokens[1:], strict=True):
            self.stdout.write(f"  {'merchant':<9} {user.username} (API token {other_token})")
        self.stdout.write(f"Demo coupon (10 % off the demo merchants' products): {DEMO_COUPON}")
        self.stdout.write(f"Demo merchant API token, every scope (header 'Authorization: Token …'): {token}")
        self.stdout.write(f"Demo staff API token (disputes arbitration, same header): {staff_token}")
        self.stdout.write("Merchant and staff sign-ins then ask for a code: add the URI to an authenticator app,")
        self.stdout.write("or use a backup code (each works once):")
        for role, (uri, codes) in two_factor.items():
            if role not in ("merchant", "staff"):
                continue  # the extra merchants: in --json
            self.stdout.write(f"  {role:<9} {uri}")
            self.stdout.write(f"  {'':<9} backup codes: {' '.join(codes)}")

    def _merchant(self, user: User, number: int, now) -> Merchant:
        return Merchant.objects.filter(user=user).first() or services.merchant_create(
            user=user,
            name="Demo Card Store" if number == 1 else f"Demo Card Store {number}",
            contact=user.email,
            now=now,
            status=MerchantStatus.APPROVED,
        )

    def _products(self, merchant: Merchant, now) -> list[Product]:
        """The demo products of `merchant`, each with keys in stock: a product sold out since the last
        run (a load test) gets a new batch. Each merchant also gets the demo coupon."""
        products = []
        categories = {
            slug: Category.objects.get_or_create(
                slug=slug, defaults={"name": name, "name_zh_hans": name_zh, "position": position}
            )[0]
            for slug, name, name_zh, position in CATEGORIES
        }
        for index, (title, price, currency, category, description) in enumerate(PRODUCTS):
            product = Product.objects.filter(merchant=merchant, title=title).first() or services.product_create(
                merchant=merchant,
                title=title,
                price=price,
                currency=currency,
                now=now,
                category=categories[category],
                description=description,
                price_tiers=DEMO_TIERS if index == 0 else [],
            )
            if not CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).exists():
                keys = [
                    f"DEMO-{secrets.token_hex(2).upper()}-{secrets.token_hex(4).upper()}"
                    for _ in range(KEYS_PER_PRODUCT)
                ]
                services.keys_import_batch(product=product, keys=keys, now=now)
            products.append(product)
        if not Coupon.objects.filter(merchant=merchant, code=DEMO_COUPON).exists():
            services.coupon_create(
                merchant=merchant, code=DEMO_COUPON, kind=CouponKind.PERCENT, value=10, actor=None, now=now
            )
        return products

    def _json_print(self, merchant_users, buyer, staff, tokens, staff_token, two_factor, products) -> None:
        def user_row(role: str, user: User, token: str | None) -> dict:
            otpauth, codes = two_factor.get(user.username if role == "merchant" else role, (None, []))
            return {
                "role": role,
                "username": user.username,
                "email": user.email,
                "password": DEMO_PASSWORD,
                "otpauth": otpauth,
                "backup_codes": codes,
                "token": token,
            }

        users = [user_row("merchant", user, token) for user, token in zip(merchant_users, tokens, strict=True)]
        # Buyers have no API token yet (buyer tokens come with sign-in by token, issue 11 item 2).
        users += [user_row("buyer", buyer, None), user_row("staff", staff, staff_token)]
        owners = {user.pk: user.username for user in merchant_users}
        stock = dict(
            CardKey.objects.filter(product__in=products, status=CardKeyStatus.AVAILABLE)
            .values_list("product")
            .annotate(n=Count("pk"))
        )
        rows = [
            {
                "id": product.pk,
                "merchant": owners[product.merchant.user_id],
                "title": product.title,
                "stock": stock.get(product.pk, 0),
            }
            for product in products
        ]
        self.stdout.write(json.dumps({"users": users, "products": rows}, ensure_ascii=False, indent=2))

    def _demo_token(self, merchant: Merchant, now, *, number: int = 1) -> str:
        """The database keeps only a token's hash, so the demo token's secret is kept in var/ (ignored by
        git, like var/local.env); a rerun prints the same token, and makes a new one if the file is gone
        or no longer matches an active token."""
        path = demo_token_file(number)
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
            user = User.objects.create_user(
                username=username, email=email, password=DEMO_PASSWORD, email_verified_at=timezone.now(), **flags
            )
        return user
