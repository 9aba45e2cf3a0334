"""Scale-out drill (issue 20): the deployment of two application hosts on one PostgreSQL and one
Redis, and whether every guarantee holds when the work is spread over them.

Host A runs gunicorn, a Celery worker and beat; host B runs gunicorn and a Celery worker. Each
process is its own process group, started with its host's own environment (its own mail folder,
log files, connection lifetime and worker name), as if on two machines; what they share is what
two machines would share: the database, Redis, SECRET_KEY and the export folder (MEDIA_ROOT, a
shared volume: an export written by host B's worker is downloaded through host A's web server).

32 clients randomize --participants participants, each client talking to one of the two web
servers (half each). Then the drill checks, and prints:

- every request answered 2xx; every participant randomized once; no slot used twice, none
  skipped in any stratum; every schedule complete;
- reminders: beat (host A) plans and hands over, both workers send; the staff reminders of every
  participant's second visit are made due now (the drill moves their due time, as the calendar
  would), and each is sent exactly once: one message per sent reminder over both hosts' mail,
  no message twice;
- an export requested through host B is written by a worker and downloaded, complete (one row
  per screening) and identical, through both web servers;
- the audit chain, extended by whichever worker ran it, verifies (`audit_verify`).

The database is a scratch one on the server of DATABASE_URL (a superuser; the owner and
application roles of `make run`); Redis is a private server on a free port. Exits 1 if a check
fails.

    make drill-scale      (or: .venv/bin/python bench/scale_out_drill.py [--participants 640])
"""

from __future__ import annotations

import argparse
import email
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_environment,
    database_name,
    free_port,
    load_first_protocol,
    manage,
    scratch_database_url,
)

CLIENTS = 32
FOLDER = ROOT / "var" / "drill-scale"


def say(message: str) -> None:
    print(f"[scale] {message}", flush=True)


class Host:
    """One machine's processes: gunicorn and a Celery worker, and beat if `beat`."""

    def __init__(self, name: str, env: dict[str, str], *, beat: bool, web_workers: int, worker_concurrency: int):
        self.name = name
        self.folder = FOLDER / f"host-{name}"
        (self.folder / "mail").mkdir(parents=True, exist_ok=True)
        self.env = env
        self.port = free_port()
        self.beat = beat
        self.web_workers = web_workers
        self.worker_concurrency = worker_concurrency
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, role: str, command: list[str]) -> None:
        log = open(self.folder / f"{role}.log", "w")
        self.processes[role] = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> None:
        python = sys.executable
        self._start(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "trialsite.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.web_workers),
                "--log-level",
                "warning",
            ],
        )
        self._start(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "trialsite",
                "worker",
                "--loglevel",
                "warning",
                "--concurrency",
                str(self.worker_concurrency),
                "--hostname",
                f"worker-{self.name}@%h",
            ],
        )
        if self.beat:
            self._start(
                "beat",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "trialsite",
                    "beat",
                    "--loglevel",
                    "warning",
                    "--schedule",
                    str(self.folder / "celerybeat-schedule"),
                ],
            )
        import socket

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"host {self.name}: gunicorn did not start (see {self.folder}/web.log)")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for role, process in self.processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                say(f"host {self.name}: {role} did not stop on SIGTERM; SIGKILL to its group")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def exited(self) -> list[str]:
        return [role for role, process in self.processes.items() if process.poll() is not None]

    def messages(self) -> list[email.message.Message]:
        """Every message host's worker wrote (the file backend: one file per connection, the
        messages separated by a line of 79 dashes)."""
        found = []
        for path in sorted((self.folder / "mail").glob("*.log")):
            for chunk in path.read_text(encoding="utf-8").split("-" * 79 + "\n"):
                if chunk.strip():
                    found.append(email.message_from_string(chunk))
        return found


def randomize_over(ports: list[int], jobs: list[tuple[int, str]]) -> tuple[Counter, Counter, float]:
    """32 closed-loop clients, client n on web server n mod 2; (statuses, requests per server, s)."""
    queue = list(reversed(jobs))
    lock = threading.Lock()
    statuses: Counter = Counter()
    per_server: Counter = Counter()

    def client(number: int) -> None:
        port = ports[number % len(ports)]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                participant_id, token = queue.pop()
            try:
                connection.request(
                    "POST",
                    f"/api/v1/participants/{participant_id}/randomize/",
                    body="{}",
                    headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as error:
                status = type(error).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                statuses[status] += 1
                per_server[port] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, per_server, time.monotonic() - started


def http_request(port: int, method: str, path: str, *, headers: dict, body: str | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(condition, *, timeout: float, every: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def check(failures: list[str], condition: bool, what: str) -> None:
    say(("ok      " if condition else "FAILED  ") + what)
    if not condition:
        failures.append(what)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=640)
    parser.add_argument("--wait", type=int, default=300, help="seconds to wait for beat and the workers")
    options = parser.parse_args()

    from tests.worker import RedisServer
    from trialsite.devstack import create_roles

    shutil.rmtree(FOLDER, ignore_errors=True)
    (FOLDER / "redis").mkdir(parents=True)
    (FOLDER / "shared-media").mkdir()
    name = database_name("trialsite_drill_scale")
    app_url, owner_url = create_roles(scratch_database_url(name), name)
    redis = RedisServer(FOLDER / "redis")
    redis.start()
    shared = {
        "REDIS_URL": redis.url,
        "CELERY_BROKER_URL": redis.url,
        "MEDIA_ROOT": str(FOLDER / "shared-media"),
        "AUDIT_SEAL_FILE": str(FOLDER / "shared-media" / "audit-seals.jsonl"),
    }
    env = bench_environment(app_url, DATABASE_OWNER_URL=owner_url, **shared)
    manage(env, "migrate", "--no-input")
    load_first_protocol(env)
    manage(env, "collectstatic", "--no-input")
    os.environ.update(bench_environment(app_url, **shared))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trialsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from dosing.reminders.models import Reminder
    from enrollment.models import Participant, Screening
    from randomization import services
    from randomization.models import Slot
    from reports.models import Export
    from schedules.models import Visit
    from tests import factories
    from trialsite import audit
    from trialsite.audit import audit_context
    from trialsite.models import Role, Site, Trial

    trial = Trial.objects.get()
    sites = [Site.objects.get(code="NT")] + [factories.make_site(trial, code) for code in ("E2", "E3", "E4")]
    coordinators = {
        site.pk: factories.make_user(
            Role.COORDINATOR, site, username=f"c-{site.code}", email=f"coordinator-{site.code.lower()}@drill.example"
        )
        for site in sites
    }
    for site in sites:
        factories.make_user(
            Role.INVESTIGATOR, site, username=f"pi-{site.code}", email=f"pi-{site.code.lower()}@drill.example"
        )
    tokens = {site_id: factories.api_key(user) for site_id, user in coordinators.items()}
    statistician = factories.make_user(Role.STATISTICIAN, sites[0], username="statistician")
    randomization_list = services.list_generate(
        trial=trial, seed="drill-scale", slots_per_stratum=options.participants, created_by=statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD)
    participants = [
        factories.make_participant(sites[index % len(sites)], by=coordinators[sites[index % len(sites)].pk])
        for index in range(options.participants)
    ]
    connection.close()

    def host_env(name: str, **own: str) -> dict[str, str]:
        return {
            **env,
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(FOLDER / f"host-{name}" / "mail"),
            "DEFAULT_FROM_EMAIL": f"trial-{name}@drill.example",
            **own,
        }

    hosts = [
        Host("a", host_env("a", DATABASE_CONN_MAX_AGE="300"), beat=True, web_workers=2, worker_concurrency=2),
        Host("b", host_env("b", DATABASE_CONN_MAX_AGE="0"), beat=False, web_workers=2, worker_concurrency=2),
    ]
    failures: list[str] = []
    try:
        for host in hosts:
            host.start()
        say(
            f"host a: gunicorn :{hosts[0].port} (2 workers), Celery worker, beat; host b: gunicorn :{hosts[1].port} "
            "(2 workers), Celery worker; one PostgreSQL, one Redis; each process its own group"
        )

        # 1. Randomization over both web servers.
        statuses, per_server, seconds = randomize_over(
            [host.port for host in hosts], [(p.pk, tokens[p.site_id]) for p in participants]
        )
        say(
            f"{len(participants)} randomizations by {CLIENTS} clients in {seconds:.1f} s "
            f"({len(participants) / seconds:.1f}/s); per web server {dict(per_server)}; answers {dict(statuses)}"
        )
        check(failures, set(statuses) <= {"200", "201"}, f"every randomization answered 2xx ({dict(statuses)})")
        randomized = Participant.objects.filter(pk__in=[p.pk for p in participants], randomized_at__isnull=False)
        check(
            failures,
            randomized.count() == len(participants),
            f"every participant randomized ({randomized.count()}/{len(participants)})",
        )
        used = Slot.objects.filter(randomization_list=randomization_list, participant__isnull=False)
        check(
            failures,
            used.count() == used.values("participant").distinct().count() == len(participants),
            f"one slot per participant, none used twice ({used.count()} slots)",
        )
        skipped = 0
        for stratum in used.values_list("stratum", flat=True).distinct():
            sequences = sorted(used.filter(stratum=stratum).values_list("sequence", flat=True))
            skipped += sum(1 for expected, got in enumerate(sequences, start=1) if expected != got)
        check(failures, skipped == 0, f"no slot skipped or taken out of order in any stratum ({skipped})")
        schedule_sizes = Counter(
            Counter(Visit.objects.filter(participant__in=randomized).values_list("participant", flat=True)).values()
        )
        check(
            failures,
            len(schedule_sizes) == 1 and sum(schedule_sizes.values()) == len(participants),
            f"every schedule complete (visits per participant: {dict(schedule_sizes)})",
        )

        # 2. Reminders: planned (at randomization or by beat's first dispatch), then made due.
        def planned() -> bool:
            return Reminder.objects.filter(participant__in=randomized).values("participant").distinct().count() == len(
                participants
            )

        started = time.monotonic()
        check(
            failures,
            wait_until(planned, timeout=options.wait),
            f"every participant's reminders planned ({time.monotonic() - started:.0f} s)",
        )
        now = timezone.now()
        second_visits = Visit.objects.filter(participant__in=randomized, sequence=2)
        due = Reminder.objects.filter(visit__in=second_visits, audience="site_staff", status="scheduled")
        with audit_context(reason="scale-out drill: the calendar reaches the second visits' reminders"):
            made_due = due.update(due_at=now - timezone.timedelta(minutes=1))
        due_ids = set(
            Reminder.objects.filter(visit__in=second_visits, audience="site_staff").values_list("id", flat=True)
        )
        say(f"{made_due} staff reminders of the second visits made due; waiting for beat and the workers")

        def settled() -> bool:
            return not Reminder.objects.filter(id__in=due_ids, status__in=("scheduled", "sending")).exists()

        started = time.monotonic()
        check(
            failures,
            wait_until(settled, timeout=options.wait),
            f"every due reminder handled ({time.monotonic() - started:.0f} s)",
        )
        outcome = Counter(Reminder.objects.filter(id__in=due_ids).values_list("status", flat=True))
        check(failures, outcome == Counter({"sent": len(due_ids)}), f"every due reminder sent ({dict(outcome)})")
        # Wait for anything still in flight before counting the mail.
        wait_until(lambda: not Reminder.objects.filter(status="sending").exists(), timeout=60)
        sent = Reminder.objects.filter(status="sent")
        messages = {host.name: host.messages() for host in hosts}
        # A reminder's message carries its id (Message-ID <reminder-<id>@...>): the same id
        # twice is the same reminder sent twice, whichever hosts sent it.
        keys = Counter(
            str(message["Message-ID"]).split("@")[0].strip("<")
            for host_messages in messages.values()
            for message in host_messages
        )
        total = sum(keys.values())
        say(
            f"mail: {', '.join(f'host {name} {len(found)}' for name, found in messages.items())} messages; "
            f"{sent.count()} reminders sent in all; attempts of the sent: "
            f"{dict(Counter(sent.values_list('attempts', flat=True)))}"
        )
        check(failures, total == sent.count(), f"one message per sent reminder ({total} messages, {sent.count()} sent)")
        check(
            failures,
            all(count == 1 for count in keys.values())
            and set(keys) == {f"reminder-{pk}" for pk in sent.values_list("id", flat=True)},
            f"each sent reminder's message once, none twice ({sum(1 for count in keys.values() if count > 1)} twice)",
        )
        check(failures, all(messages.values()), "both hosts' workers sent reminders")

        # 3. An export asked of host B, written by a worker, downloaded through both web servers.
        token = factories.api_key(statistician)
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        status, body = http_request(
            hosts[1].port,
            "POST",
            "/api/v1/exports/",
            headers=headers,
            body=json.dumps({"kind": "subjects", "format": "csv"}),
        )
        check(failures, status == 202, f"export queued through host b (HTTP {status})")
        export_id = json.loads(body)["id"] if status == 202 else None
        state: dict = {}

        def export_done() -> bool:
            answer, content = http_request(hosts[0].port, "GET", f"/api/v1/exports/{export_id}/", headers=headers)
            state.update(json.loads(content) if answer == 200 else {"status": f"HTTP {answer}"})
            return state.get("status") in ("done", "failed")

        started = time.monotonic()
        finished = export_id is not None and wait_until(export_done, timeout=options.wait, every=1.0)
        check(
            failures,
            finished and state.get("status") == "done",
            f"export done, read through host a ({state.get('status')}, {time.monotonic() - started:.0f} s)",
        )
        if finished and state.get("download_url"):
            browser = Client()
            browser.force_login(statistician)
            cookie = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}
            downloads = {
                host.name: http_request(host.port, "GET", state["download_url"], headers=cookie) for host in hosts
            }
            # The statistician reports on the sites of their roles: the export's own site list.
            screenings = Screening.objects.filter(site_id__in=Export.objects.get(pk=export_id).site_ids).count()
            for name, (answer, content) in downloads.items():
                lines = content.decode("utf-8-sig").splitlines() if answer == 200 else []
                check(
                    failures,
                    answer == 200 and len(lines) - 1 == screenings == state.get("row_count"),
                    f"export downloaded through host {name} complete (HTTP {answer}, {max(0, len(lines) - 1)} rows, "
                    f"{screenings} screenings, row_count {state.get('row_count')})",
                )
            check(
                failures,
                len({content for _answer, content in downloads.values()}) == 1,
                "both web servers serve the same file",
            )

        # 4. The audit chain, extended by whichever worker beat's task reached.
        audit.chain_extend()
        try:
            call_command("audit_verify", stdout=open(os.devnull, "w"))
            check(failures, True, "audit_verify passes over the whole trail")
        except Exception as error:  # reported as a failed check
            check(failures, False, f"audit_verify passes ({error})")
        for host in hosts:
            check(
                failures, not host.exited(), f"host {host.name}: every process still running ({host.exited()} exited)"
            )
    finally:
        connection.close()
        for host in hosts:
            host.stop()
        redis.stop()
    if failures:
        say("FAILED: " + "; ".join(failures))
        return 1
    say("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
