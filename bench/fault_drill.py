"""Fault drill (issue 14, part 3): 32 clients randomize through gunicorn while PostgreSQL is
restarted, a gunicorn worker is SIGKILLed and Redis is stopped for ten seconds. Each client
retries what failed (a 5xx or a dropped connection) like a coordinator pressing the button again;
a retry of a randomization that did commit is answered "already randomized" (4xx). Afterwards the
drill checks, and prints, that nothing was lost or doubled:

- every participant is randomized exactly once, and every request ended in a success, a clean
  4xx, or a failure whose retry succeeded; no request hung;
- no slot is used twice, none skipped, in any stratum;
- every randomized participant has the whole visit schedule and, once the dispatcher's first
  step has run as beat runs it every minute (the request leaves the reminders to it), one
  reminder per visit and kind;
- the audit chain extends over everything and `audit_verify` passes.

Private servers only (an embedded PostgreSQL under var/drill/ and a Redis on a free port), so the
drill never disturbs a shared server. Exits 1 when a check fails.

    make drill        (or: .venv/bin/python bench/fault_drill.py [--participants 640])
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Gunicorn, bench_environment, load_first_protocol, manage  # noqa: E402

CLIENTS = 32
FOLDER = ROOT / "var" / "drill"


def say(message: str) -> None:
    print(f"[drill] {message}", flush=True)


class Load:
    """32 closed-loop clients; each request is retried until it gets a definite answer."""

    def __init__(self, port: int, jobs: list[tuple[int, str]]):
        self.port = port
        self.queue = list(reversed(jobs))
        self.lock = threading.Lock()
        self.outcomes: dict[int, list[str]] = {}
        self.done = 0
        self.total = len(jobs)

    def _post(self, connection, participant_id: int, token: str) -> int:
        connection.request(
            "POST",
            f"/api/v1/participants/{participant_id}/randomize/",
            body="{}",
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()
        return response.status

    def client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while True:
            with self.lock:
                if not self.queue:
                    break
                participant_id, token = self.queue.pop()
            attempts = []
            while True:
                try:
                    status = self._post(connection, participant_id, token)
                    attempts.append(str(status))
                except (OSError, http.client.HTTPException) as error:
                    attempts.append(type(error).__name__)
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    status = None
                if status is not None and status < 500:
                    break
                if len(attempts) >= 60:
                    break
                time.sleep(0.5)  # a person pressing the button again, not a tight loop
            with self.lock:
                self.outcomes[participant_id] = attempts
                self.done += 1
        connection.close()

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        return threads

    def wait_for(self, fraction: float) -> None:
        while self.done < fraction * self.total:
            time.sleep(0.05)


def gunicorn_workers(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=640)
    options = parser.parse_args()

    import pgserver
    from pgserver._commands import pg_ctl

    from tests.worker import RedisServer
    from trialsite.devstack import create_roles

    shutil.rmtree(FOLDER, ignore_errors=True)
    (FOLDER / "redis").mkdir(parents=True)
    server = pgserver.get_server(FOLDER / "pgdata", cleanup_mode="stop")
    superuser_url = server.get_uri("postgres").replace("/postgres?", "/trialsite_drill?")
    server.psql("CREATE DATABASE trialsite_drill;")
    app_url, owner_url = create_roles(superuser_url, "trialsite_drill")
    redis = RedisServer(FOLDER / "redis")
    redis.start()
    os.environ.update({"REDIS_URL": redis.url, "CELERY_BROKER_URL": redis.url})
    os.environ["AUDIT_SEAL_FILE"] = str(FOLDER / "audit-seals.jsonl")
    env = bench_environment(app_url, DATABASE_OWNER_URL=owner_url)
    manage(env, "migrate", "--no-input")
    load_first_protocol(env)
    os.environ.update(bench_environment(app_url))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trialsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from dosing.reminders.models import Reminder
    from dosing.reminders.services import reminders_plan_pending
    from enrollment.models import Participant
    from randomization import services
    from randomization.models import Slot
    from schedules.models import Visit
    from tests import factories
    from trialsite import audit
    from trialsite.models import Role, Site, Trial

    def token_for(user) -> str:
        if hasattr(factories, "api_key"):
            return factories.api_key(user)
        from rest_framework.authtoken.models import Token

        return Token.objects.create(user=user).key

    trial = Trial.objects.get()
    sites = [Site.objects.get(code="NT")] + [factories.make_site(trial, code) for code in ("D2", "D3", "D4")]
    coordinators = {site.pk: factories.make_user(Role.COORDINATOR, site, username=f"c-{site.code}") for site in sites}
    tokens = {site_id: token_for(user) for site_id, user in coordinators.items()}
    statistician = factories.make_user(Role.STATISTICIAN, sites[0], username="statistician")
    randomization_list = services.list_generate(
        trial=trial, seed="drill", slots_per_stratum=options.participants, created_by=statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD)
    participants = [
        factories.make_participant(sites[index % len(sites)], by=coordinators[sites[index % len(sites)].pk])
        for index in range(options.participants)
    ]
    connection.close()

    failures: list[str] = []
    with Gunicorn(env, workers=4) as web:
        load = Load(web.port, [(p.pk, tokens[p.site_id]) for p in participants])
        started = time.monotonic()
        threads = load.run()
        load.wait_for(0.15)
        say(f"{load.done}/{load.total} done: restarting PostgreSQL (pg_ctl restart -m fast)")
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
        load.wait_for(0.35)
        victim = gunicorn_workers(web.process.pid)[0]
        say(f"{load.done}/{load.total} done: SIGKILL to gunicorn worker {victim}")
        os.kill(victim, signal.SIGKILL)
        load.wait_for(0.55)
        say(f"{load.done}/{load.total} done: stopping Redis for ten seconds")
        redis.stop()
        time.sleep(10)
        redis_port = redis.port
        redis.start()
        assert redis.port == redis_port
        say(f"{load.done}/{load.total} done: Redis is back")
        for thread in threads:
            thread.join(timeout=600)
            if thread.is_alive():
                failures.append("a client is still waiting for an answer after ten minutes")
        say(f"load finished in {time.monotonic() - started:.0f}s")

    # What came back.
    answers = Counter(attempt for attempts in load.outcomes.values() for attempt in attempts)
    retried = sum(1 for attempts in load.outcomes.values() if len(attempts) > 1)
    say(f"answers: {dict(sorted(answers.items()))}; {retried} randomization(s) needed a retry")
    unfinished = [pk for pk, attempts in load.outcomes.items() if not attempts[-1].isdigit() or attempts[-1] >= "500"]
    check(failures, not unfinished, f"every request ended in an answer below 500 ({len(unfinished)} did not)")
    clean = [pk for pk, attempts in load.outcomes.items() if attempts[-1] not in ("200", "201", "409", "400")]
    check(failures, not clean, f"every final answer was a success or 'already randomized' ({len(clean)} were not)")
    check(failures, len(load.outcomes) == len(participants), "every participant was sent")

    # What the database holds.
    randomized = Participant.objects.filter(pk__in=[p.pk for p in participants], randomized_at__isnull=False)
    check(
        failures,
        randomized.count() == len(participants),
        f"every participant randomized ({randomized.count()}/{len(participants)})",
    )
    used = Slot.objects.filter(randomization_list=randomization_list, participant__isnull=False)
    check(failures, used.count() == used.values("participant").distinct().count(), "no participant holds two slots")
    check(failures, used.count() == len(participants), f"one slot per participant ({used.count()})")
    skipped = 0
    for stratum in used.values_list("stratum", flat=True).distinct():
        sequences = sorted(used.filter(stratum=stratum).values_list("sequence", flat=True))
        skipped += sum(
            1 for expected, got in zip(range(1, len(sequences) + 1), sequences, strict=True) if expected != got
        )
    check(failures, skipped == 0, f"no slot skipped or taken out of order in any stratum ({skipped})")
    visit_counts = Counter(Visit.objects.filter(participant__in=randomized).values_list("participant", flat=True))
    schedule_sizes = Counter(visit_counts.values())
    check(
        failures,
        len(schedule_sizes) == 1 and len(visit_counts) == len(participants),
        f"every randomized participant has the whole schedule (visits per participant: {dict(schedule_sizes)})",
    )
    # No beat runs in the drill: its first step, run here, plans what the randomizations left to it.
    planned = reminders_plan_pending()
    check(failures, planned > 0, f"the dispatcher's first step planned the reminders ({planned})")
    reminders = Counter(Reminder.objects.filter(participant__in=randomized).values_list("visit", "kind", "audience"))
    doubled = sum(1 for count in reminders.values() if count > 1)
    per_participant = Counter(Reminder.objects.filter(participant__in=randomized).values_list("participant", flat=True))
    check(failures, doubled == 0, f"no reminder scheduled twice ({doubled})")
    check(
        failures,
        len(set(per_participant.values())) == 1 and len(per_participant) == len(participants),
        f"every participant has the same reminders (per participant: {dict(Counter(per_participant.values()))})",
    )
    audit.chain_extend()
    try:
        call_command("audit_verify", stdout=sys.stdout)
        check(failures, True, "audit_verify passes over the whole trail")
    except Exception as error:  # reported as a failed check
        check(failures, False, f"audit_verify passes ({error})")

    connection.close()
    redis.stop()
    # The restart made a postmaster pgserver did not start, so it would not stop it at exit.
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)
    if failures:
        say("FAILED: " + "; ".join(failures))
        return 1
    say("all checks passed")
    return 0


def check(failures: list[str], condition: bool, what: str) -> None:
    say(("ok      " if condition else "FAILED  ") + what)
    if not condition:
        failures.append(what)


if __name__ == "__main__":
    sys.exit(main())
