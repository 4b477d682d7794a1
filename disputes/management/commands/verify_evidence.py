from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from disputes import evidence


class Command(BaseCommand):
    help = (
        "Tell whether a dispute evidence package is as the shop signed it: exit 0 intact, 1 altered or "
        "badly signed (naming what), 2 unreadable. --public-key prints the shop's evidence public key."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="the evidence ZIP")
        parser.add_argument("--public-key", action="store_true", help="print the public key (base64) and exit")

    def handle(self, *args, file=None, public_key=False, **options):
        if public_key:
            self.stdout.write(evidence.public_key_text())
            return
        if not file:
            raise CommandError("Give the evidence ZIP to check (or --public-key).", returncode=2)
        try:
            verdict = evidence.evidence_verify(data=Path(file).read_bytes())
        except (OSError, evidence.EvidenceUnreadable) as error:
            raise CommandError(f"unreadable: {file} is not an evidence package ({error})", returncode=2) from None
        if not verdict.intact:
            raise CommandError(f"altered: {verdict.problem}", returncode=1)
        self.stdout.write(f"intact: the evidence of dispute {verdict.dispute}, signed by the shop's key")
