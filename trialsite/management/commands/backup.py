from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from trialsite.backup import BackupError, backup


class Command(BaseCommand):
    help = "Seal the audit chain, then pg_dump the database (custom format) with the seal file into BACKUP_DIR/<time>/."

    def add_arguments(self, parser):
        parser.add_argument("--into", type=Path, help="folder under which the backup folder is made")

    def handle(self, *args, into, **options):
        try:
            folder = backup(into)
        except BackupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(str(folder))
