from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from trialsite.audit_chain import read_seals, verify


class Command(BaseCommand):
    help = (
        "Recompute the audit chain from the rows as they are and check it against the seals published "
        "outside the database. Names the first row changed, removed or inserted; exits 1 if any."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seal", type=Path, help="seal file (default: AUDIT_SEAL_FILE)")
        parser.add_argument(
            "--seal-database",
            help="check against the seals of this database name (a restored copy: the original's name)",
        )

    def handle(self, *args, seal, seal_database, **options):
        path = seal or settings.AUDIT_SEAL_FILE
        try:
            seals = read_seals(path)
        except ValueError as error:
            raise CommandError(str(error)) from None
        result = verify(seals, seal_database=seal_database)
        summary = (
            f"{result.database}: {result.rows_chained} audit rows chained (last id {result.last_event_id}), "
            f"head {result.head}; {result.seals_checked} seal(s) from {path} checked; "
            f"{result.unchained} newer row(s) not chained yet"
        )
        if result.ok:
            self.stdout.write(f"OK {summary}")
            return
        self.stderr.write(f"FAILED {summary}")
        for finding in result.findings:
            self.stderr.write(f"  {finding.message}")
        raise CommandError(f"the audit trail was tampered with: first, {result.first.message}")
