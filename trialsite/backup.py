"""Backup and restore drill: `manage.py backup` (pg_dump custom format plus the seal file) and
`manage.py restore <dir> --database NAME` (pg_restore into a new database)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from trialsite import audit


class BackupError(Exception):
    pass


def _binary_dirs() -> list[Path]:
    folders = []
    if os.getenv("PG_BIN_DIR"):
        folders.append(Path(os.environ["PG_BIN_DIR"]))
    for name in ("pg_dump",):
        found = shutil.which(name)
        if found:
            folders.append(Path(found).resolve().parent)
    folders += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    try:
        import pgserver

        folders.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    return folders


def _major(binary: Path) -> int:
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"\)\s*(\d+)", output).group(1))


def find_binary(name: str, server_major: int) -> Path:
    """The client binary for this server: the same major version if there is one, otherwise the
    newest newer one (pg_dump reads older servers, never newer ones)."""
    candidates = []
    for folder in _binary_dirs():
        binary = folder / name
        if binary.is_file() and os.access(binary, os.X_OK):
            major = _major(binary)
            if major >= server_major:
                candidates.append((major != server_major, -major, binary))
    if not candidates:
        raise BackupError(
            f"missing: {name} for PostgreSQL {server_major} or newer (Debian package "
            f"'postgresql-client-{server_major}', or set PG_BIN_DIR to the folder holding it)"
        )
    return sorted(candidates)[0][2]


def _server_major(database: dict) -> int:
    import psycopg

    with psycopg.connect(**_conninfo(database)) as connection:
        return int(connection.execute("SHOW server_version_num").fetchone()[0]) // 10000


def _conninfo(database: dict, name: str | None = None) -> dict:
    info = {"dbname": name or database["NAME"], "user": database["USER"]}
    if database.get("PASSWORD"):
        info["password"] = database["PASSWORD"]
    if database.get("HOST"):
        info["host"] = database["HOST"]
    if database.get("PORT"):
        info["port"] = database["PORT"]
    return info


def _environment(database: dict, name: str | None = None) -> dict:
    info = _conninfo(database, name)
    env = {**os.environ, "PGDATABASE": info["dbname"], "PGUSER": info["user"]}
    for key, variable in (("password", "PGPASSWORD"), ("host", "PGHOST"), ("port", "PGPORT")):
        if key in info:
            env[variable] = str(info[key])
    return env


def owner_database() -> dict:
    database = dict(settings.DATABASES["default"])
    owner = getattr(settings, "DATABASE_OWNER", None)
    if owner:
        database.update({key: owner[key] for key in ("USER", "PASSWORD", "HOST", "PORT")})
    return database


def backup(destination_root: Path | None = None) -> Path:
    """Seal the chain, then dump the database in one snapshot (pg_dump is consistent on its own)
    and copy the seal file next to it. Returns the folder."""
    database = owner_database()
    pg_dump = find_binary("pg_dump", _server_major(database))
    record = audit.seal(occasion="backup")
    folder = (destination_root or settings.BACKUP_DIR) / timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(parents=True)
    dump = folder / "database.dump"
    result = subprocess.run(
        [str(pg_dump), "--format=custom", "--file", str(dump)],
        env=_environment(database),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
    if settings.AUDIT_SEAL_FILE.exists():
        shutil.copy2(settings.AUDIT_SEAL_FILE, folder / "audit-seals.jsonl")
    manifest = {"database": database["NAME"], "created_at": timezone.now().isoformat(), "seal": record}
    (folder / "backup.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def restore(folder: Path, *, name: str, admin_url: str | None = None) -> dict:
    """Create database `name` and restore the dump in `folder` into it, owners and grants as they
    were. Creating a database needs a role with CREATEDB: DATABASE_ADMIN_URL, else the owner."""
    import psycopg
    from psycopg import sql

    from trialsite.settings import database_from_url

    manifest = json.loads((folder / "backup.json").read_text(encoding="utf-8"))
    admin = database_from_url(admin_url) if admin_url else owner_database()
    pg_restore = find_binary("pg_restore", _server_major(admin))
    try:
        with psycopg.connect(**_conninfo(admin, "postgres"), autocommit=True) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                raise BackupError(f"database {name} exists already: restore goes into a new database")
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            owner = owner_database()["USER"]
            connection.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner))
            )
    except psycopg.errors.InsufficientPrivilege as error:
        raise BackupError(f"{error}: set DATABASE_ADMIN_URL to a role with CREATEDB") from None
    result = subprocess.run(
        [str(pg_restore), "--exit-on-error", "--dbname", name, str(folder / "database.dump")],
        env=_environment(admin, name),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed: {result.stderr.strip()}")
    return manifest
