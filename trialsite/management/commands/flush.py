from django.core.management.commands.flush import Command as DjangoFlush
from django.db import connections

from trialsite.dbroles import as_owner


class Command(DjangoFlush):
    help = DjangoFlush.help + " Runs as the owner role (DATABASE_OWNER_URL) when one is configured."

    def handle(self, **options):
        # Emptying tables is the owner's business: the application's role has no TRUNCATE on the
        # audit trail. (The audit triggers allow it in test databases only.) The chain has no
        # model, so it is emptied here with the trail it chains.
        with as_owner(options["database"]):
            result = super().handle(**options)
            with connections[options["database"]].cursor() as cursor:
                cursor.execute("SELECT current_database() LIKE 'test\\_%%'")
                if cursor.fetchone()[0]:
                    cursor.execute("TRUNCATE trialsite_auditchain")
            return result
