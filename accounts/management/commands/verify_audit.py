from django.core.management.base import BaseCommand, CommandError

from accounts.audit_chain import chain_verify


class Command(BaseCommand):
    help = (
        "Walk the audit trail's hash chain; exit non-zero naming the first entry that was edited, deleted "
        "or reordered (or a published checkpoint the chain no longer matches). Entries not sealed yet are "
        "counted, not errors."
    )

    def handle(self, *args, **options):
        report = chain_verify()
        if report.problem:
            raise CommandError(f"The audit chain is broken: {report.problem}.")
        if report.unsealed:
            pending = (
                f"; {report.unsealed} newer entries not sealed yet (oldest written "
                f"{report.oldest_unsealed_at:%Y-%m-%d %H:%M:%S} UTC: the sealing task chains them)"
            )
        else:
            pending = ""
        head = "empty"
        if report.head_entry is not None:
            head = f"head seq {report.head_seq} = entry {report.head_entry}, {report.head_hash[:16]}…"
        self.stdout.write(
            self.style.SUCCESS(
                f"The audit chain holds: {report.sealed} sealed entries ({head}), "
                f"{report.checkpoints} published checkpoints match{pending}."
            )
        )
