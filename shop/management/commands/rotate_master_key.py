from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts import services as accounts_services
from shop import crypto, services


class Command(BaseCommand):
    help = (
        "Re-wrap every merchant's data key and re-seal every TOTP seed and webhook secret under the newest "
        "master key in CARDKEY_MASTER_KEYS (the first entry). Card-key and payout-account rows are not "
        "touched (they are sealed under the data keys). Add the new key first ('v2:…,v1:…'), run this, "
        "then the old key may be removed."
    )

    def handle(self, *args, **options):
        now = timezone.now()
        try:
            newest = crypto.master_keys()[0][0]
            with transaction.atomic():  # all or nothing, data keys and seeds together
                rewrapped, current = services.merchant_data_keys_rewrap(now=now)
                resealed, seeds_current = accounts_services.totp_seeds_reseal(now=now)
                hooks_resealed, hooks_current = services.webhook_secrets_reseal(now=now)
        except crypto.CardKeyCryptoError as error:
            raise CommandError(f"Nothing was changed: {error}") from error
        self.stdout.write(f"Data keys now under master key {newest}: {rewrapped} re-wrapped, {current} already were.")
        self.stdout.write(
            f"TOTP seeds now under master key {newest}: {resealed} re-sealed, {seeds_current} already were."
        )
        self.stdout.write(
            f"Webhook secrets now under master key {newest}: {hooks_resealed} re-sealed, {hooks_current} already were."
        )
