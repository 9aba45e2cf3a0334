"""Reminder scan: 100,000 scheduled visits with their reminders; the time and query count for
beat to find the due reminders and hand them to the broker, against a raw SQL SELECT of the same
rows. Runs against a scratch database and a private Redis.

    .venv/bin/python bench/reminder_scan_bench.py [--visits 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import load_first_protocol, manage, scratch_database_url, setup_django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--due-fraction", type=float, default=0.05)
    options = parser.parse_args()

    database_url = scratch_database_url("trialsite_bench_reminders")
    from bench.common import bench_environment

    env = bench_environment(database_url)
    manage(env, "migrate", "--no-input")
    load_first_protocol(env)

    from tests.worker import RedisServer

    redis_server = RedisServer(Path(tempfile.mkdtemp()))
    redis_server.start()
    setup_django(database_url)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from dosing.reminders import services
    from dosing.reminders.models import Reminder
    from trialsite.celery import app as celery_app

    celery_app.conf.broker_write_url = redis_server.url
    load_rows(options.visits, options.due_fraction)
    now = timezone.now()
    due_count = Reminder.objects.filter(status="scheduled", due_at__lte=now).count()
    print(f"reminder scan: {options.visits:,} visits, {Reminder.objects.count():,} reminders, {due_count:,} due")

    raw_times, scan_times, dispatch_times, queries = [], [], [], []
    for _ in range(options.runs):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM reminders_reminder WHERE status = 'scheduled' AND due_at <= %s "
                "AND enqueued_at IS NULL ORDER BY id",
                [now],
            )
            raw_rows = cursor.fetchall()
        raw_times.append(time.perf_counter() - started)

        started = time.perf_counter()
        found = []
        after = 0
        while batch := services.due_reminder_ids(now=now, batch_size=2000, after_id=after):
            found += batch
            after = batch[-1]
        scan_times.append(time.perf_counter() - started)
        assert len(found) == len(raw_rows) == due_count

        Reminder.objects.filter(id__in=found).update(enqueued_at=None)
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            handed = services.reminders_dispatch(now=now)
            dispatch_times.append(time.perf_counter() - started)
        queries.append(len(captured.captured_queries))
        assert handed == due_count
        Reminder.objects.filter(id__in=found).update(enqueued_at=None)
        celery_app.connection_for_write().default_channel.client.delete("celery")

    raw, scan, dispatch = (statistics.median(values) for values in (raw_times, scan_times, dispatch_times))
    print(f"raw SQL SELECT of the due rows          median {raw * 1000:9.1f} ms")
    print(f"due_reminder_ids (ORM, batches of 2000) median {scan * 1000:9.1f} ms   ratio {scan / raw:5.2f}x raw")
    print(
        f"reminders_dispatch (find + enqueue)     median {dispatch * 1000:9.1f} ms   "
        f"{due_count / dispatch:,.0f} reminders/s, {statistics.median(queries):.0f} queries "
        f"({statistics.median(queries) / max(1, -(-due_count // 2000)):.1f} per batch of 2000)"
    )
    redis_server.stop()


def load_rows(visits: int, due_fraction: float) -> None:
    """Participants with 20 visits each and their reminders, through COPY (the audit triggers
    are switched off for this scratch load only: they are not what is measured)."""
    from django.db import connection
    from django.utils import timezone

    from trialsite.models import Site

    site = Site.objects.get()
    participants = max(1, visits // 20)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, "
            "is_staff, is_active, date_joined) VALUES ('!', false, 'bench', '', '', '', false, true, now()) "
            "RETURNING id"
        )
        user_id = cursor.fetchone()[0]
        copy_rows(
            cursor,
            "enrollment_screening",
            [
                "id",
                "site_id",
                "initials",
                "date_of_birth",
                "sex",
                "hospital_record_number",
                "screening_date",
                "outcome",
                "reasons",
                "stratification",
                "screened_by_id",
                "created_at",
                "updated_at",
                "subject_key",
            ],
            (
                (
                    n,
                    site.pk,
                    "BN",
                    "1970-01-01",
                    "F",
                    f"H{n}",
                    "2026-01-01",
                    "eligible",
                    "[]",
                    "{}",
                    user_id,
                    now,
                    now,
                    f"{site.code}-P{n:05d}",
                )
                for n in range(1, participants + 1)
            ),
        )
        copy_rows(
            cursor,
            "enrollment_participant",
            [
                "screening_id",
                "site_id",
                "screening_number",
                "status",
                "randomization_number",
                "randomized_at",
                "contact_consent",
                "contact_email",
                "language",
                "created_at",
            ],
            (
                (n, site.pk, f"S-NT-{n:06d}", "randomized", f"NT-{n:06d}", now, False, "", "en", now)
                for n in range(1, participants + 1)
            ),
        )
        visit_rows, reminder_rows = [], []
        visit_id = reminder_id = 0
        today = datetime.date.today()
        for participant in range(1, participants + 1):
            for sequence in range(1, 21):
                visit_id += 1
                target = today + datetime.timedelta(days=28 * sequence - 400)
                visit_rows.append(
                    (
                        visit_id,
                        participant,
                        site.pk,
                        sequence,
                        f"V{sequence}",
                        "dosing",
                        sequence,
                        target,
                        target - datetime.timedelta(days=3),
                        target + datetime.timedelta(days=3),
                        "scheduled",
                        "",
                        False,
                    )
                )
                for kind, days in (("window_7d", 7), ("window_1d", 1), ("missed", -4)):
                    reminder_id += 1
                    due = now + datetime.timedelta(days=(target - today).days - days)
                    if reminder_id % int(1 / due_fraction) == 0:
                        due = now - datetime.timedelta(minutes=5)
                    elif due <= now:
                        due = now + datetime.timedelta(days=1)
                    reminder_rows.append(
                        (
                            reminder_id,
                            participant,
                            site.pk,
                            visit_id,
                            kind,
                            "site_staff",
                            "email",
                            due,
                            "scheduled",
                            0,
                            "",
                            "",
                            now,
                        )
                    )
        copy_rows(
            cursor,
            "dosing_visit",
            [
                "id",
                "participant_id",
                "site_id",
                "sequence",
                "code",
                "kind",
                "cycle",
                "target_date",
                "window_start",
                "window_end",
                "status",
                "out_of_window_reason",
                "is_deviation",
            ],
            visit_rows,
        )
        copy_rows(
            cursor,
            "reminders_reminder",
            [
                "id",
                "participant_id",
                "site_id",
                "visit_id",
                "kind",
                "audience",
                "channel",
                "due_at",
                "status",
                "attempts",
                "recipients",
                "status_reason",
                "created_at",
            ],
            reminder_rows,
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("ANALYZE")


def copy_rows(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


if __name__ == "__main__":
    main()
