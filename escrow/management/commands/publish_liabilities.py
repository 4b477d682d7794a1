from django.core.management.base import BaseCommand
from django.utils import timezone

from escrow import liabilities
from escrow.models import LedgerAccount


class Command(BaseCommand):
    help = "Publish the Merkle sum tree of what the platform owes (per currency): root hash and total."

    def handle(self, *args, **options):
        currencies = sorted(set(LedgerAccount.objects.values_list("currency", flat=True))) or ["CNY"]
        for currency in currencies:
            publication = liabilities.liabilities_publish(currency=currency, now=timezone.now())
            self.stdout.write(
                f"{currency}: root {publication.root_hash} total {publication.total} over "
                f"{publication.leaf_count} creditors; funds held {publication.funds_held}"
            )
