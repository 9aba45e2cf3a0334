from django.core.management.commands.migrate import Command as DjangoMigrate

from trialsite.dbroles import as_owner


class Command(DjangoMigrate):
    help = DjangoMigrate.help + " Runs as the owner role (DATABASE_OWNER_URL) when one is configured."

    def handle(self, *args, **options):
        # The owner creates the tables and trigger functions and, after migrate, grants the
        # application's role (DATABASE_URL) its rows (trialsite.audit.grant_privileges).
        with as_owner(options["database"]):
            return super().handle(*args, **options)
