import os

import psycopg
from django.core.management.base import BaseCommand, CommandError

from trialsite import dbroles
from trialsite.settings import database_from_url


class Command(BaseCommand):
    help = (
        "Create the owner and application roles and hand the database to the owner, as a superuser "
        "(DATABASE_ADMIN_URL). For a database made before the two roles; new ones get them from "
        "`make run` or docker/postgres-init. Passwords from OWNER_DB_PASSWORD and APP_DB_PASSWORD."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", default="trialsite_owner")
        parser.add_argument("--app", default="trialsite_app")

    def handle(self, *args, owner, app, **options):
        if not os.getenv("DATABASE_ADMIN_URL"):
            raise CommandError("set DATABASE_ADMIN_URL to a superuser's URL for the database")
        admin = database_from_url(os.environ["DATABASE_ADMIN_URL"])
        conninfo = {"dbname": admin["NAME"], "user": admin["USER"], "autocommit": True}
        conninfo |= {key.lower(): admin[key] for key in ("PASSWORD", "HOST", "PORT") if admin[key]}
        with psycopg.connect(**conninfo) as connection:
            dbroles.ensure_roles(
                connection,
                owner=owner,
                app=app,
                owner_password=os.getenv("OWNER_DB_PASSWORD", ""),
                app_password=os.getenv("APP_DB_PASSWORD", ""),
            )
            dbroles.hand_over_database(connection, database=admin["NAME"], owner=owner)
        self.stdout.write(
            f"{owner} owns {admin['NAME']}; run `manage.py migrate` with DATABASE_OWNER_URL as {owner} (it grants "
            f"{app} its rows), then connect the application as {app}"
        )
