"""Export benchmark: N synthetic participants with their visits, exported to CSV and CDISC ODM
through the application's own export code, against PostgreSQL's own COPY of the same rows.

    .venv/bin/python bench/export_bench.py [--participants 100000] [--keep]

It creates a scratch database (`trialsite_bench` on the server of DATABASE_URL), migrates it,
loads the protocol and bulk-loads the synthetic rows with COPY. During the load only, and only in
that scratch database, `SET session_replication_role = replica` switches the audit triggers off
(they would write one audit row per synthetic row and measure the trigger, not the export).
Prints per export: median wall time of three untraced runs, rows, file size, Python's peak heap
(tracemalloc, in a fourth run) and the process's peak resident memory (getrusage). Not part of
`make test`."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import analyze, database_name, report  # noqa: E402

SCRATCH = database_name("trialsite_bench")
UTC = datetime.UTC


def scratch_url(url: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path="/" + SCRATCH))


def recreate_database(url: str) -> None:
    import psycopg

    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{SCRATCH}"')


def drop_database(url: str) -> None:
    import psycopg

    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


def copy_rows(cursor, model, rows) -> int:
    """COPY dicts of field values into the model's table; fields not given take their default."""
    import itertools

    from django.utils import timezone

    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return 0
    rows = itertools.chain([first], rows)
    # Serial keys are left to the database unless the rows give them.
    fields = [
        field
        for field in model._meta.concrete_fields
        if field.attname in first or field.get_internal_type() not in ("AutoField", "BigAutoField")
    ]
    columns = ", ".join(f'"{field.column}"' for field in fields)
    now = timezone.now()
    count = 0
    with cursor.copy(f'COPY "{model._meta.db_table}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            values = []
            for field in fields:
                if field.attname in row:
                    value = row[field.attname]
                elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                    value = now
                else:
                    value = field.get_default()
                if isinstance(value, dict | list):
                    value = json.dumps(value)
                values.append(value)
            copy.write_row(values)
            count += 1
    return count


def load(participants: int) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from enrollment.models import Consent, EligibilityAnswer, Participant, Screening, Withdrawal
    from randomization.models import RandomizationList, Slot
    from trialsite.audit import audit_context
    from trialsite.models import Arm, StaffRole
    from trialsite.protocol import load_protocol

    trial = load_protocol(settings.PROTOCOL_FILE)
    site = trial.sites.order_by("code").first()
    users = get_user_model()
    with audit_context(reason="bench"):
        statistician = users.objects.create_user("bench-statistician", password="bench-password-2026")
        investigator = users.objects.create_user("bench-investigator", password="bench-password-2026")
        StaffRole.objects.create(user=statistician, site=site, role="statistician")
        StaffRole.objects.create(user=investigator, site=site, role="investigator")
    arms = list(Arm.objects.filter(trial=trial).order_by("order"))
    criteria = trial.protocol.eligibility.criteria
    rng = random.Random(20260101)  # synthetic data only
    start = datetime.date(2024, 1, 1)
    Visit = _visit_model()

    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # the psycopg cursor, for COPY
        cursor.execute("SET session_replication_role = replica")  # no audit triggers: scratch data
        with audit_context(reason="bench"):
            randomization_list = RandomizationList.objects.create(
                trial=trial,
                version=1,
                source="generated",
                seed="bench",
                block_sizes=[4],
                slots_per_stratum=participants,
                sha256="0" * 64,
                created_by=statistician,
                locked_at=datetime.datetime(2023, 12, 31, tzinfo=UTC),
                locked_by=statistician,
                is_active=True,
            )
        people = []
        for index in range(1, participants + 1):
            screening_date = start + datetime.timedelta(days=index * 700 // participants)
            eligible = rng.random() < 0.85
            people.append((index, screening_date, eligible))

        screening_rows = (
            {
                "id": index,
                "site_id": site.pk,
                "subject_key": f"{site.code}-P{index:05d}",
                "initials": "XX",
                "date_of_birth": datetime.date(1960 + index % 30, 1 + index % 12, 1 + index % 28),
                "sex": "F" if index % 2 else "M",
                "hospital_record_number": f"B{index:08d}",
                "screening_date": day,
                "outcome": "eligible" if eligible else "ineligible",
                "reasons": [] if eligible else [{"code": "EX1", "text": "Liver disease"}],
                "stratification": {},
                "screened_by_id": investigator.pk,
            }
            for index, day, eligible in people
        )
        counts = {"screenings": copy_rows(cursor, Screening, screening_rows)}
        counts["consents"] = copy_rows(
            cursor,
            Consent,
            (
                {
                    "screening_id": i,
                    "site_id": site.pk,
                    "version": "1.0",
                    "signed_on": d,
                    "obtained_by_id": investigator.pk,
                }
                for i, d, _e in people
            ),
        )
        counts["answers"] = copy_rows(
            cursor,
            EligibilityAnswer,
            (
                {
                    "screening_id": i,
                    "site_id": site.pk,
                    "criterion_code": c.code,
                    "answer": ("yes" if c.kind == "inclusion" else "no") if e or c.code != "EX1" else "yes",
                }
                for i, _d, e in people
                for c in criteria
            ),
        )
        enrolled = [(i, d) for i, d, e in people if e]
        randomized = {}
        for number, (index, day) in enumerate(enrolled, start=1):
            randomized[index] = (number, datetime.datetime.combine(day, datetime.time(2), tzinfo=UTC))
        counts["participants"] = copy_rows(
            cursor,
            Participant,
            (
                {
                    "screening_id": i,
                    "site_id": site.pk,
                    "screening_number": f"S-NT-{i:06d}",
                    "status": "withdrawn" if i % 50 == 0 else "randomized",
                    "randomization_number": f"NT-{randomized[i][0]:06d}",
                    "randomized_at": randomized[i][1],
                    "language": "zh-hans",
                }
                for i, _d in enrolled
            ),
        )
        counts["slots"] = copy_rows(
            cursor,
            Slot,
            (
                {
                    "randomization_list_id": randomization_list.pk,
                    "stratum": "NT",
                    "site_id": site.pk,
                    "sequence": number,
                    "block": (number - 1) // 4 + 1,
                    "block_size": 4,
                    "arm_id": arms[(number - 1) % 4].pk,
                    "participant_id": i,
                    "allocated_at": randomized[i][1],
                }
                for i, (number, _when) in randomized.items()
            ),
        )
        counts["withdrawals"] = copy_rows(
            cursor,
            Withdrawal,
            (
                {
                    "participant_id": i,
                    "site_id": site.pk,
                    "withdrawn_on": d + datetime.timedelta(days=40),
                    "reason": "bench",
                    "recorded_by_id": investigator.pk,
                }
                for i, d in enrolled
                if i % 50 == 0
            ),
        )
        if Visit is not None:
            counts["visits"] = copy_rows(cursor, Visit, visit_rows(Visit, enrolled, site, rng))
        cursor.execute("SET session_replication_role = origin")
        cursor.execute("SELECT setval(pg_get_serial_sequence('enrollment_screening', 'id'), %s)", [participants])
        cursor.execute("ANALYZE")
    return {"counts": counts, "statistician": statistician, "investigator": investigator}


def _visit_model():
    try:
        from schedules.models import Visit
    except ImportError:
        return None
    return Visit


def visit_rows(Visit, enrolled, site, rng):
    """Cycle visits every 28 days from randomization (6 on average: the trial is under way),
    coded by the protocol's pattern."""
    from trialsite.protocol_schema import visit_code

    pattern = site.trial.protocol.schedule.treatment.code
    today = datetime.date(2026, 1, 1)
    for index, day in enrolled:
        planned = 1 + index % 12
        for cycle in range(1, planned + 1):
            target = day + datetime.timedelta(days=28 * (cycle - 1))
            if target > today and cycle > 1:
                break
            status = "completed" if rng.random() < 0.95 else "missed"
            yield {
                "participant_id": index,
                "site_id": site.pk,
                "sequence": cycle,
                "code": visit_code(pattern, cycle),
                "kind": "dosing",
                "cycle": cycle,
                "target_date": target,
                "window_start": target - datetime.timedelta(days=3),
                "window_end": target + datetime.timedelta(days=3),
                "status": status,
                "actual_date": target if status == "completed" else None,
            }


def measure(label: str, function, runs: int = 3) -> dict:
    """Median time of untraced runs, then one run under tracemalloc for the peak: tracing every
    allocation slows Python two to four times, so a traced run's time would not be the export's."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = function()
        times.append(time.perf_counter() - started)
    elapsed = statistics.median(times)
    tracemalloc.start()
    function()
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{label:<34} {elapsed:8.2f} s  {rows:>9} rows  Python peak {peak / 2**20:7.1f} MB  process max RSS {maxrss_mb:7.1f} MB"
    )
    return {"seconds": elapsed, "rows": rows, "peak_mb": peak / 2**20}


def postgres_copy(label: str, sql: str, runs: int = 3) -> float:
    from django.db import connection

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        size = 0
        with connection.cursor() as django_cursor:
            with django_cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
                for chunk in copy:
                    size += len(chunk)
        times.append(time.perf_counter() - started)
    elapsed = statistics.median(times)
    print(f"{label:<34} {elapsed:8.2f} s  ({size / 2**20:.1f} MB)")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
    arguments = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trialsite")
    recreate_database(base_url)
    os.environ["DATABASE_URL"] = scratch_url(base_url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trialsite.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    try:
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        loaded = load(arguments.participants)
        print(f"loaded {loaded['counts']} in {time.perf_counter() - started:.1f} s (COPY, audit triggers off)")
        # The exports and the COPYs they are held to read tables in the state autovacuum leaves.
        analyze(vacuum=True)
        run_exports(loaded, keep=arguments.keep)
    finally:
        from django.db import connections

        connections.close_all()
        if not arguments.keep:
            drop_database(base_url)
    return 0


def run_exports(loaded: dict, *, keep: bool) -> None:
    from reports import exports, selectors, services

    output = Path(tempfile.mkdtemp(prefix="export-bench-"))
    print(f"\nfiles in {output}")
    results = {}
    for role in ("investigator", "statistician"):
        user = loaded[role]
        scope = selectors.report_scope(user)
        stamp = exports.make_stamp(scope, export_id=None)
        variant = "unblinded" if scope.unblinded else "blinded"

        def subjects_csv(scope=scope, stamp=stamp, variant=variant):
            with open(output / f"subjects-{variant}.csv", "w", encoding="utf-8", newline="") as stream:
                # As the worker runs it: in the export's snapshot transaction (reports.services).
                with services.snapshot():
                    return exports.write_csv(exports.tables_for("subjects", scope), stream, stamp)

        def visits_csv(scope=scope, stamp=stamp, variant=variant):
            with open(output / f"visits-{variant}.csv", "w", encoding="utf-8", newline="") as stream:
                with services.snapshot():
                    return exports.write_csv(exports.tables_for("visits", scope), stream, stamp)

        def odm(scope=scope, stamp=stamp, variant=variant):
            with open(output / f"dataset-{variant}.xml", "w", encoding="utf-8") as stream:
                with services.snapshot():
                    return exports.write_odm(scope, stream, stamp)

        def analysis(format: str, scope=scope, variant=variant):
            """The analysis package (every dataset, datasets/), as the worker writes it."""
            from datasets.build import build_package
            from datasets.writers import write_csv_zip, write_stats_zip

            path = output / f"analysis-{variant}-{format}.zip"
            with services.snapshot():
                package = build_package(scope)
                if format == "csv":
                    return write_csv_zip(package, path)
                return write_stats_zip(package, path, format)

        results[f"analysis csv {variant}"] = measure(f"analysis package CSV zip ({variant})", lambda: analysis("csv"))
        results[f"analysis sav {variant}"] = measure(f"analysis package SPSS zip ({variant})", lambda: analysis("sav"))
        results[f"subjects.csv {variant}"] = measure(f"subjects CSV ({variant})", subjects_csv)
        results[f"visits.csv {variant}"] = measure(f"visits CSV ({variant})", visits_csv)
        results[f"odm {variant}"] = measure(f"ODM 1.3.2 XML ({variant})", odm)
    for path in sorted(output.iterdir()):
        print(f"  {path.name:<28} {path.stat().st_size / 2**20:8.1f} MB")

    print("\nPostgreSQL COPY (SELECT ...) TO STDOUT of the same rows:")
    subjects_sql = (
        "SELECT s.id, st.code, s.screening_date, s.sex, s.date_of_birth, s.outcome, s.reasons, "
        "(SELECT c.signed_on FROM enrollment_consent c WHERE c.screening_id = s.id ORDER BY c.signed_on DESC, c.id DESC LIMIT 1), "
        "p.screening_number, p.randomization_number, p.randomized_at, p.status, w.withdrawn_on "
        "FROM enrollment_screening s JOIN trialsite_site st ON st.id = s.site_id "
        "LEFT JOIN enrollment_participant p ON p.screening_id = s.id "
        "LEFT JOIN enrollment_withdrawal w ON w.participant_id = p.screening_id ORDER BY s.id"
    )
    copy_subjects = postgres_copy("COPY subjects", subjects_sql)
    ratio = results["subjects.csv blinded"]["seconds"] / copy_subjects
    print(f"subjects CSV (blinded) / COPY = {ratio:.1f}x")
    report("subjects CSV (blinded) time / COPY", f"{ratio:.1f}x", "<= 5x", ratio <= 5)
    if _visit_model() is not None:
        table = _visit_model()._meta.db_table
        copy_visits = postgres_copy(
            "COPY visits",
            f"SELECT v.participant_id, p.randomization_number, st.code, v.code, v.kind, v.cycle, v.target_date, "
            f"v.window_start, v.window_end, v.status, v.actual_date FROM {table} v "
            f"JOIN enrollment_participant p ON p.screening_id = v.participant_id "
            f"JOIN trialsite_site st ON st.id = v.site_id ORDER BY v.participant_id, v.target_date, v.id",
        )
        visits_ratio = results["visits.csv blinded"]["seconds"] / copy_visits
        print(f"visits CSV (blinded) / COPY = {visits_ratio:.1f}x")
        report("visits CSV (blinded) time / COPY", f"{visits_ratio:.1f}x", "<= 5x", visits_ratio <= 5)
        copy_answers = postgres_copy(
            "COPY eligibility answers",
            "SELECT a.screening_id, a.criterion_code, a.answer FROM enrollment_eligibilityanswer a "
            "ORDER BY a.screening_id, a.id",
        )
        # The ODM holds the subjects, their answers and their visits: all three COPYs together.
        odm_ratio = results["odm blinded"]["seconds"] / (copy_subjects + copy_visits + copy_answers)
        print(f"ODM (blinded) / COPY of subjects, answers and visits = {odm_ratio:.1f}x")
        report("ODM (blinded) time / COPY of its rows", f"{odm_ratio:.1f}x", "<= 5x", odm_ratio <= 5)
    for variant in ("blinded", "unblinded"):
        for format in ("csv", "sav"):
            result = results[f"analysis {format} {variant}"]
            report(
                f"analysis package {format} ({variant}) Python peak",
                f"{result['peak_mb']:.1f} MB in {result['seconds']:.1f} s",
                "< 200 MB",
                result["peak_mb"] < 200,
            )
    worst = max(result["peak_mb"] for result in results.values())
    print(
        f"\nhighest Python peak over all exports: {worst:.1f} MB (limit 200 MB): {'OK' if worst < 200 else 'TOO HIGH'}"
    )
    report("export Python peak (worst export)", f"{worst:.1f} MB", "< 200 MB", worst < 200)
    if not keep:
        shutil.rmtree(output)


if __name__ == "__main__":
    sys.exit(main())
