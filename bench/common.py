"""Shared pieces of the benchmarks: a scratch database, gunicorn serving the app with the
production settings, and a closed-loop HTTP load generator on loopback.

Nothing here runs in `make test`; the scripts print figures, they do not assert times. Each figure
that issue 20 sets a target for is printed by `report()` as one line, `figure  value  target
PASS|MISS`; `bench/run_all.py` (`make bench`) collects those lines into its summary."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_SECRET_KEY = "bench-" + secrets.token_urlsafe(48)


def base_database_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trialsite")


def database_name(name: str) -> str:
    """`name` behind BENCH_DATABASE_PREFIX, so that benches run side by side (or beside the tests
    of someone else on the same server) never drop each other's scratch databases."""
    prefix = os.environ.get("BENCH_DATABASE_PREFIX", "")
    return name if name.startswith(prefix) else prefix + name


def scratch_database_url(name: str) -> str:
    """Create (or re-create) a database `name` (behind BENCH_DATABASE_PREFIX) next to
    DATABASE_URL's and return its URL."""
    import psycopg

    name = database_name(name)
    parsed = urlparse(base_database_url())
    admin_url = parsed._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return parsed._replace(path=f"/{name}").geturl()


def bench_environment(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "false",
        "SECRET_KEY": BENCH_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        # Logins are set up once; the measured requests use tokens.
        "PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


# The first protocol by name, as settings.PROTOCOL_FILE picks it (no trial is named in the code).
PROTOCOL_FILE = min((ROOT / "protocols").glob("*.toml"))


def load_first_protocol(env: dict[str, str]) -> None:
    """The benches measure one trial: `load_protocol` without a path would load every file."""
    manage(env, "load_protocol", str(PROTOCOL_FILE))


def scratch_trial_database(name: str) -> str:
    """The scratch database `name` (behind BENCH_DATABASE_PREFIX), re-created with the owner and
    application roles of `make run`, migrated, with the first protocol loaded, and this process's
    Django set up on it as the application role. Returns its DATABASE_URL."""
    from trialsite.devstack import create_roles

    app_url, owner_url = create_roles(scratch_database_url(name), database_name(name))
    env = bench_environment(app_url, DATABASE_OWNER_URL=owner_url)
    manage(env, "migrate", "--no-input")
    load_first_protocol(env)
    setup_django(app_url)
    return app_url


def dosing_visit_body(day) -> str:
    """A dosing visit's POST visits/<pk>/record/ body as the benches send it: within every
    safety gate, so the dose is given and its kits assigned."""
    return dumps(
        {
            "actual_date": day.isoformat(),
            "weight_kg": "68.0",
            "neutrophils": 3000,
            "platelets": 200000,
            "alt_uln": "0.9",
            "ast_uln": "0.9",
        }
    )


def analyze(*, vacuum: bool = False) -> None:
    """ANALYZE (VACUUM ANALYZE with `vacuum`) as the owner of the tables (DATABASE_OWNER_URL): the
    application role may not, and PostgreSQL skips, with a warning only, every table it does not
    own. It stands in for autovacuum, which a production server runs and which the CI servers of
    this project's machines turn off: rows just bulk-loaded keep the planner's old estimates until
    an ANALYZE, and a session's cached plans (the deferred foreign-key checks' among them) keep
    a plan made for a table of a hundred rows; without a VACUUM, every index-only scan of those
    rows still visits the table and the first reader writes their hint bits."""
    import psycopg

    url = os.environ.get("DATABASE_OWNER_URL") or os.environ["DATABASE_URL"]
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as owner:
        owner.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")


def report(figure: str, value: str, target: str, passed: bool) -> bool:
    """One figure beside its target (issue 20), in the form `bench/run_all.py` collects."""
    print(f"{figure:<58}  {value:<26}  {target:<26}  {'PASS' if passed else 'MISS'}", flush=True)
    return passed


def setup_django(database_url: str) -> None:
    os.environ.update(bench_environment(database_url))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trialsite.settings")
    import django

    django.setup()


def manage(env: dict[str, str], *arguments: str) -> None:
    subprocess.run([sys.executable, "manage.py", *arguments], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """gunicorn with the production settings, as docker-compose runs it."""

    def __init__(self, env: dict[str, str], *, workers: int = 4, threads: int = 1):
        self.env = env
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "trialsite.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def __exit__(self, *exc) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class LoadResult:
    name: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<28} clients={self.clients:<3} requests={len(self.latencies):<5} "
            f"rps={self.requests_per_second:8.1f} p50={self.percentile(50):7.1f}ms "
            f"p99={self.percentile(99):7.1f}ms statuses={dict(sorted(self.statuses.items()))}"
        )


def run_load(
    *, name: str, port: int, clients: int, requests: list[tuple[str, str, str | None]], token_for
) -> LoadResult:
    """Send `requests` (method, path, json body) from `clients` threads, each over its own
    keep-alive connection, as fast as answers come back (closed loop)."""
    result = LoadResult(name=name, clients=clients)
    lock = threading.Lock()
    queue = list(enumerate(requests))
    queue.reverse()

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                index, (method, path, body) = queue.pop()
            headers = {"Authorization": f"Token {token_for(index)}", "Content-Type": "application/json"}
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                result.latencies.append(elapsed)
                result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


def median_of(results: list[LoadResult]) -> LoadResult:
    """The run with the median throughput."""
    ordered = sorted(results, key=lambda run: run.requests_per_second)
    return ordered[len(ordered) // 2]


def dumps(payload) -> str:
    return json.dumps(payload)


def statistics_line(label: str, values: list[float], unit: str) -> str:
    return (
        f"{label:<40} median={statistics.median(values):10.3f}{unit} min={min(values):10.3f}{unit} runs={len(values)}"
    )
