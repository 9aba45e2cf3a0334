"""The two PostgreSQL roles: an owner that runs migrations and owns every table and trigger
function, and the application role that only reads and writes rows.

Creating roles needs a superuser (or CREATEROLE); that happens once, outside the application:
`make run` and the tests do it with `ensure_roles` on the server they start or are given, and
docker-compose with docker/postgres-init/roles.sh. The grants themselves are made by the owner
after every migrate (`grant_application_privileges`), so a new table is covered the moment it
exists, and ALTER DEFAULT PRIVILEGES covers tables created by hand later."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.core import checks
from psycopg import sql

# What the application role must never have, checked by `manage.py check --deploy` too.
RESTRICTED_ATTRIBUTES = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT LOGIN"

# The audit trail is written by the SECURITY DEFINER trigger functions, never directly.
APPEND_ONLY_TABLES = ("trialsite_auditevent", "trialsite_auditchain")


def ensure_roles(admin, *, owner: str, app: str, owner_password: str = "", app_password: str = "") -> None:
    """Create (or correct) both roles, with `admin` a psycopg connection as a superuser. Safe to
    run while another process does the same (roles are shared by every database of the server)."""
    with admin.transaction():
        admin.execute("SELECT pg_advisory_xact_lock(hashtext('trialsite roles'))")
        for name, password, attributes in (
            (owner, owner_password, "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN"),
            (app, app_password, RESTRICTED_ATTRIBUTES),
        ):
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            admin.execute(sql.SQL(f"{verb} ROLE {{}} {attributes}").format(sql.Identifier(name)))
            if password:
                admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))


def hand_over_database(admin, *, database: str, owner: str) -> None:
    """Make `owner` the owner of the database, its public schema and everything in it, and take
    CREATE on the schema away from everyone else. `admin` is a superuser connection to `database`
    (a database created by the superuser before the two roles existed is adopted this way)."""
    ident = sql.Identifier
    admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident(database), ident(owner)))
    admin.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(ident(owner)))
    admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    objects = admin.execute(
        """
        SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              ELSE 'TABLE' END, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND pg_get_userbyid(c.relowner) <> %s
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
        """,
        [owner],
    ).fetchall()
    for kind, name in objects:
        admin.execute(sql.SQL(f"ALTER {kind} {{}} OWNER TO {{}}").format(ident(name), ident(owner)))
    functions = admin.execute(
        """
        SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %s
        """,
        [owner],
    ).fetchall()
    for (signature,) in functions:
        admin.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(signature), ident(owner)))


def grant_application_privileges(cursor, *, app: str) -> None:
    """Run as the owner: rows of every table to `app`, except that the audit trail and its chain
    are read-only to it; sequences usable; the same for tables the owner creates later."""
    role = '"' + app.replace('"', '""') + '"'
    cursor.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    cursor.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
    )
    cursor.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}")
    for table in APPEND_ONLY_TABLES:
        cursor.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table} FROM {role}")
        cursor.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table} FROM PUBLIC")


def role_problems(cursor, *, audited_tables: list[str]) -> list[str]:
    """What lets the connected role rewrite the trail unseen, in words (empty when nothing).
    `cursor` is a DB-API cursor on the application's connection."""
    cursor.execute(
        "SELECT rolsuper, rolcreaterole, rolbypassrls, rolreplication FROM pg_roles WHERE rolname = current_user"
    )
    superuser, createrole, bypassrls, replication = cursor.fetchone()
    problems = []
    if superuser:
        problems.append("is a superuser: it can disable the audit triggers and rewrite the trail")
    if createrole:
        problems.append("has CREATEROLE: it can grant itself the owner's role")
    if bypassrls or replication:
        problems.append("has BYPASSRLS or REPLICATION")
    cursor.execute(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname = ANY(%s) AND pg_has_role(current_user, c.relowner, 'USAGE')
        ORDER BY 1
        """,
        [list(audited_tables)],
    )
    owned = [name for (name,) in cursor.fetchall()]
    if owned:
        problems.append(f"owns (or is a member of the owner of) audited tables: {', '.join(owned[:5])}")
    cursor.execute(
        "SELECT has_table_privilege(current_user, 'trialsite_auditevent', 'INSERT, UPDATE, DELETE, TRUNCATE')"
    )
    if cursor.fetchone()[0]:
        problems.append("may write the audit table directly")
    return problems


@contextlib.contextmanager
def as_owner(alias: str = "default") -> Iterator[None]:
    """Run the block on the owner's connection (DATABASE_OWNER_URL) to the same database, then
    return to the application's role. Without an owner configured, nothing changes."""
    from django.conf import settings
    from django.db import connections

    owner = getattr(settings, "DATABASE_OWNER", None)
    if not owner or alias != "default":
        yield
        return
    connection = connections[alias]
    keys = ("USER", "PASSWORD", "HOST", "PORT", "OPTIONS")
    saved = {key: connection.settings_dict[key] for key in keys}
    connection.close()
    connection.settings_dict.update({key: owner[key] for key in keys})
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)


@checks.register(checks.Tags.security, deploy=True)
def application_role(app_configs, **kwargs):
    """`check --deploy`: the application's database role must not be able to rewrite the trail."""
    from django.db import DatabaseError, connection

    from trialsite.audit import audited_models

    tables = ["trialsite_auditevent", "trialsite_auditchain", *(m._meta.db_table for m in audited_models())]
    try:
        with connection.cursor() as cursor:
            problems = role_problems(cursor, audited_tables=tables)
            cursor.execute("SELECT current_user")
            role = cursor.fetchone()[0]
    except DatabaseError as error:
        return [checks.Warning(f"The database could not be asked about its roles: {error}", id="trialsite.W020")]
    return [
        checks.Error(
            f"The application's database role {role!r} {problem}.",
            hint="Connect with a role that only reads and writes rows (DATABASE_URL) and migrate as the "
            "owner (DATABASE_OWNER_URL); README, 'Database roles and the audit chain'.",
            id="trialsite.E020",
        )
        for problem in problems
    ]
