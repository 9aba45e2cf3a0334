"""The test database, made the way production runs: created by the superuser of DATABASE_URL,
migrated by an owner role, and used by every test (and the Celery workers and servers the tests
start) as the application's restricted role. So each test proves the application works without
privilege.

Given a DATABASE_URL whose role is not a superuser, the two roles cannot be made: the test
database is then created the ordinary way (pytest-django) and the run says so."""

from __future__ import annotations

import warnings

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from psycopg import sql

from trialsite import dbroles

OWNER_ROLE = "trialsite_test_owner"
APP_ROLE = "trialsite_test_app"
# Local servers trust 127.0.0.1; the passwords are there so URLs look like production's.
OWNER_PASSWORD = "test-owner-password"
APP_PASSWORD = "test-app-password"


class Plan:
    superuser: dict | None = None  # psycopg connect() arguments for the test database
    name: str = ""


plan = Plan()


def _conninfo(settings_dict: dict, name: str) -> dict:
    info = {"dbname": name, "user": settings_dict["USER"], "autocommit": True}
    for key, target in (("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        if settings_dict.get(key):
            info[target] = settings_dict[key]
    return info


def setup(*, verbosity: int = 0):
    """Returns what teardown needs; `None` when the ordinary setup was used."""
    connection = connections["default"]
    settings_dict = connection.settings_dict
    name = connection.creation._get_test_db_name()
    admin = _conninfo(settings_dict, "postgres")
    with psycopg.connect(**admin) as server:
        superuser = server.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if not superuser:
            warnings.warn(
                f"DATABASE_URL's role {settings_dict['USER']!r} is not a superuser: the tests run as that role, "
                "not as the restricted application role",
                stacklevel=1,
            )
            return None
        dbroles.ensure_roles(
            server, owner=OWNER_ROLE, app=APP_ROLE, owner_password=OWNER_PASSWORD, app_password=APP_PASSWORD
        )
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(**_conninfo(settings_dict, name)) as database:
        dbroles.hand_over_database(database, database=name, owner=OWNER_ROLE)

    plan.superuser = _conninfo(settings_dict, name)
    plan.name = name
    connection.close()
    settings_dict["NAME"] = name
    settings.DATABASES["default"]["NAME"] = name
    settings.DATABASE_OWNER = {**settings_dict, "USER": OWNER_ROLE, "PASSWORD": OWNER_PASSWORD}
    settings.DATABASE_APP_ROLE = APP_ROLE
    # migrate (trialsite's) runs as DATABASE_OWNER and grants APP_ROLE its rows afterwards.
    call_command("migrate", verbosity=verbosity, interactive=False, run_syncdb=True)
    settings_dict.update({"USER": APP_ROLE, "PASSWORD": APP_PASSWORD})
    settings.DATABASES["default"].update({"USER": APP_ROLE, "PASSWORD": APP_PASSWORD})
    connection.close()
    return plan


def teardown() -> None:
    connections["default"].close()
    admin = {**plan.superuser, "dbname": "postgres"}
    with psycopg.connect(**admin) as server:
        server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(plan.name)))


def database_url(*, user: str | None = None) -> str:
    """DATABASE_URL of the test database, as the application's role unless `user` is given (for
    the processes a test starts: Celery workers, manage.py)."""
    database = settings.DATABASES["default"]
    user = user or database["USER"]
    password = {OWNER_ROLE: OWNER_PASSWORD, database["USER"]: database["PASSWORD"]}.get(user, "")
    host = database["HOST"] or "127.0.0.1"
    if host.startswith("/"):
        return f"postgres://{user}@/{database['NAME']}?host={host}"
    return f"postgres://{user}:{password}@{host}:{database['PORT'] or 5432}/{database['NAME']}"
