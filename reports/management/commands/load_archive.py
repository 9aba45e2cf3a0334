from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from reports.archive import ArchiveError, load_archive


class Command(BaseCommand):
    help = (
        "Rebuild a trial from its archive (a 'Trial archive' export, CDISC ODM with the trial's rows) in an "
        "empty, migrated database, as the owner role (DATABASE_OWNER_URL). The load is kept only if the "
        "rebuilt database exports the identical file."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--check", action="store_true", help="check the file and this database; write nothing")

    def handle(self, *args, file, check, **options):
        try:
            result = load_archive(file, check_only=check)
        except (ArchiveError, OSError) as error:
            raise CommandError(str(getattr(error, "message", error))) from None
        rows = sum(result.rows.values())
        if check:
            self.stdout.write(
                f"{file}: {result.trial}, {rows} rows in {len(result.rows)} tables; it can be loaded here."
            )
            return
        self.stdout.write(
            f"Loaded {result.trial} from {file} (SHA-256 {result.sha256}): {rows} rows in {len(result.rows)} tables. "
            "This database exports the identical file. Staff have no password here: set them with "
            "`manage.py changepassword`; second factors and API tokens are made again."
        )
