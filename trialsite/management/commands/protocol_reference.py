from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from trialsite.protocol_reference import REFERENCE_PATH, is_current, render


class Command(BaseCommand):
    help = (
        "Write docs/protocol-reference.md, every table and key of a protocol file, from the models that validate it. "
        "With --check, write nothing and exit 1 when the file is not what the models say."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check", action="store_true", help="Exit 1 when docs/protocol-reference.md is stale; write nothing."
        )

    def handle(self, *args, check, **options):
        path = settings.BASE_DIR / REFERENCE_PATH
        if check:
            if not is_current(path):
                raise CommandError(
                    f"{REFERENCE_PATH} does not match trialsite/protocol_schema.py: "
                    "run `python manage.py protocol_reference` and commit it"
                )
            self.stdout.write(f"{REFERENCE_PATH} is current")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(), encoding="utf-8")
        self.stdout.write(f"{REFERENCE_PATH} written")
