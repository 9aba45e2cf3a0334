import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from trialsite.backup import BackupError, restore


class Command(BaseCommand):
    help = (
        "Restore a backup folder (from `manage.py backup`) into a new database. Creating it needs a role "
        "with CREATEDB: DATABASE_ADMIN_URL if set, otherwise the owner."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--database", dest="name", required=True, help="name of the new database")

    def handle(self, *args, folder, name, **options):
        try:
            manifest = restore(folder, name=name, admin_url=os.getenv("DATABASE_ADMIN_URL"))
        except (BackupError, OSError) as error:
            raise CommandError(str(error)) from None
        seals = folder / "audit-seals.jsonl"
        self.stdout.write(
            f"Restored {manifest['database']} ({manifest['created_at']}) into {name}. Check it with:\n"
            f"  DATABASE_URL=<the same server>/{name} python manage.py audit_verify "
            f"--seal {seals} --seal-database {manifest['database']}"
        )
