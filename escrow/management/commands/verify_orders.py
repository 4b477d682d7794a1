from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from escrow.delivery import delivery_problems


class Command(BaseCommand):
    help = "List orders paid more than a minute ago and still not delivered; exit non-zero if there are any."

    def handle(self, *args, **options):
        problems = delivery_problems(now=timezone.now())
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"{len(problems)} order(s) paid but not delivered for over a minute.")
        self.stdout.write(self.style.SUCCESS("Every paid order is delivered (or was paid under a minute ago)."))
