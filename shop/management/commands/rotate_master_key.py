from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from shop import crypto, services


class Command(BaseCommand):
    help = (
        "Re-wrap every merchant's data key under the newest master key in CARDKEY_MASTER_KEYS (the first "
        "entry). Card-key rows are not touched. Add the new key first ('v2:…,v1:…'), run this, then the old "
        "key may be removed."
    )

    def handle(self, *args, **options):
        try:
            newest = crypto.master_keys()[0][0]
            rewrapped, current = services.merchant_data_keys_rewrap(now=timezone.now())
        except crypto.CardKeyCryptoError as error:
            raise CommandError(f"Nothing was changed: {error}") from error
        self.stdout.write(f"Data keys now under master key {newest}: {rewrapped} re-wrapped, {current} already were.")
