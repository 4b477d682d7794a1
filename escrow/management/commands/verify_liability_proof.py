from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from escrow import liabilities


class Command(BaseCommand):
    help = "Check a downloaded liability proof (JSON file) against the published root."

    def add_arguments(self, parser):
        parser.add_argument("file")

    def handle(self, *args, file: str, **options):
        check = liabilities.proof_verify(proof_text=Path(file).read_bytes())
        if not check.valid:
            raise CommandError(check.message)
        self.stdout.write(self.style.SUCCESS(f"{check.message} ({check.publication.root_hash})"))
