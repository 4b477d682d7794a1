from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from escrow.ledger_checks import ledger_verify_record


class Command(BaseCommand):
    help = "Check the ledger's invariants; print what is wrong and exit non-zero if any fails."

    def handle(self, *args, **options):
        problems = ledger_verify_record(now=timezone.now())
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"The ledger fails {len(problems)} check(s).")
        self.stdout.write(self.style.SUCCESS("The ledger balances: every invariant holds."))
