from django.core.management.base import BaseCommand

from trialsite import audit


class Command(BaseCommand):
    help = (
        "Extend the audit chain and publish its head: appended to AUDIT_SEAL_FILE and e-mailed to the "
        "sponsor's contact. Run it at the database lock; beat runs it daily and exports run it too."
    )

    def add_arguments(self, parser):
        parser.add_argument("--occasion", default="manual", help="why the seal is made, e.g. 'database lock'")

    def handle(self, *args, occasion, **options):
        record = audit.seal(occasion=occasion)
        self.stdout.write(
            f"Sealed {record['rows']} audit rows (last id {record['last_event_id']}), head {record['head']}"
        )
