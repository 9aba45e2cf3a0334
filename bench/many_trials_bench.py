"""Many trials (issue 20): one trial's pages, API lists, randomization and export cost the same
with 1,000 trials in the database as with that trial alone: the same query count, and server
time within 20%.

Trial X is the first protocol file, built through the application's own services: its staff, a
locked randomization list, 100 participants screened, signed and randomized (their visits,
reminders and audit rows written by the services), and the first visit form of each filled.
That database is then copied (CREATE DATABASE ... TEMPLATE) and the other trials are loaded
into the copy. Both are measured in alternating rounds (trial X alone, then among the others,
--rounds times), so that a slower minute of a shared machine falls on both alike rather than on
whichever was measured second.

The other trials alternate between the protocol files, each with its own NCT id and site codes
(the file's text rewritten in memory and loaded by `load_protocol`), and 100 randomized
participants each with their consent, eligibility answers, randomization slot, visit plan and
filled first visit form, written by COPY with the audit triggers on: every row has its audit
row, as if entered one by one. Reminders are not loaded (derived rows, produced when due).

    .venv/bin/python bench/many_trials_bench.py [--trials 1000] [--participants 100] [--runs 15] [--rounds 3]

--trials counts trial X: `--trials 50` loads 49 others (a quick run; the figures then speak of
50 trials, and the load time printed is extrapolated to 1,000). A scratch database is made on
the server of DATABASE_URL (a superuser), with its crowded copy, with the owner and application
roles of `make run`; everything runs as the application role. This project's CI servers run
PostgreSQL with autovacuum off: the bench runs ANALYZE as the load goes, and VACUUM ANALYZE before
measuring, as autovacuum would on a production server."""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    analyze,
    base_database_url,
    bench_environment,
    database_name,
    manage,
    report,
    scratch_database_url,
    setup_django,
)
from bench.export_bench import copy_rows

UTC = datetime.UTC
SITE_CODE = re.compile(r'(\[\[sites\]\]\s*\ncode\s*=\s*")([^"]+)(")')
NCT_ID = re.compile(r'^(nct_id\s*=\s*")(NCT\d{8})(")', re.MULTILINE)
TIME_TOLERANCE = 0.20


def protocol_files() -> list[Path]:
    return sorted((ROOT / "protocols").glob("*.toml"))


def rewritten(text: str, number: int) -> str:
    """The protocol's text as trial `number`: its own NCT id and its own site codes."""
    text = NCT_ID.sub(lambda match: f"{match[1]}NCT7{number:07d}{match[3]}", text, count=1)
    letters = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return SITE_CODE.sub(lambda match: f"{match[1]}S{number:05d}{next(letters)}{match[3]}", text)


# --- trial X, through the services ------------------------------------------------------------


def form_values(protocol, form, day: datetime.date) -> dict:
    """Raw answers as a person types them: each item's first acceptable value."""
    values = {}
    for item in form.items:
        if item.unblinded_only or item.show_if is not None:
            continue
        if item.type == "integer":
            values[item.code] = str(int(item.min) if item.min is not None else 1)
        elif item.type == "decimal":
            values[item.code] = str(item.min if item.min is not None else 1)
        elif item.type == "date":
            values[item.code] = day.isoformat()
        elif item.type == "choice":
            values[item.code] = protocol.code_list(item.code_list).entries[0].code
        elif item.type == "yes_no":
            values[item.code] = "no"
        else:
            values[item.code] = "bench"
    return values


def first_visit_form(protocol, visit_codes: list[str]):
    """The first visit form and the first visit that carries it, or (None, None)."""
    for code in visit_codes:
        for form in protocol.forms:
            if form.kind == "visit" and form.carried_at(code):
                return form, code
    return None, None


def build_trial_x(participants: int, spare: int) -> dict:
    from crf.services import FormInvalid, form_save
    from randomization import services as randomization
    from tests import factories
    from trialsite.models import Role
    from trialsite.protocol import load_protocol

    trial = load_protocol(protocol_files()[0])
    site = trial.sites.order_by("code").first()
    users = {
        role: factories.make_user(role, site, username=f"x-{role}")
        for role in (
            Role.COORDINATOR,
            Role.INVESTIGATOR,
            Role.PHARMACIST,
            Role.STATISTICIAN,
            Role.MONITOR,
            Role.SUPPLY_MANAGER,
        )
    }
    randomization_list = randomization.list_generate(
        trial=trial,
        seed="many-trials-bench",
        slots_per_stratum=participants + spare + 100,
        created_by=users["statistician"],
    )
    randomization.list_lock(
        randomization_list=randomization_list, locked_by=users["statistician"], password=factories.PASSWORD
    )
    coordinator = users[Role.COORDINATOR]
    protocol = trial.protocol
    forms_saved = 0
    for _ in range(participants):
        participant = randomization.participant_randomize(
            participant=factories.make_participant(site, by=coordinator), randomized_by=coordinator
        )
        visits = list(participant.visits.order_by("sequence"))
        form, visit_code = first_visit_form(protocol, [visit.code for visit in visits])
        if form is None:
            continue
        values = form_values(protocol, form, visits[0].target_date)
        for _attempt in range(3):
            try:
                form_save(
                    user=coordinator, values=values, participant=participant, form_code=form.code, visit_code=visit_code
                )
                forms_saved += 1
                break
            except FormInvalid as invalid:  # drop what this synthetic answer got wrong, keep the rest
                values = {code: value for code, value in values.items() if code not in invalid.errors}
    return {"trial": trial, "site": site, "users": users, "forms_saved": forms_saved}


# --- the other trials, by COPY ----------------------------------------------------------------


def reserve_ids(cursor, table: str, count: int) -> list[int]:
    cursor.execute(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)", [count])
    return [row[0] for row in cursor.fetchall()]


def load_other_trial(number: int, path: Path, participants: int, loader) -> int:
    """One more trial from the file at `path`, rewritten as trial `number`; returns rows written."""
    from django.db import connection

    from crf.models import FormRecord, ItemValue
    from crf.values import normalise
    from enrollment.models import Consent, EligibilityAnswer, Participant, Screening
    from randomization.models import RandomizationList, Slot
    from schedules.models import Visit
    from schedules.services import visit_plan
    from trialsite.audit import audit_context
    from trialsite.models import StaffRole
    from trialsite.protocol import load_protocol

    with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8") as copy:
        copy.write(rewritten(path.read_text(encoding="utf-8"), number))
        copy.flush()
        trial = load_protocol(Path(copy.name))
    protocol = trial.protocol
    version_id = trial.current_version_id
    sites = list(trial.sites.order_by("code"))
    arms = list(trial.arms.order_by("order"))
    criteria = protocol.eligibility.criteria
    start = datetime.date(2025, 1, 6)
    today = datetime.date(2026, 6, 1)
    written = 0
    with audit_context(actor=loader, reason="many-trials bench load"), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        # The trail credits every row to the loader, who must hold a role at its site.
        StaffRole.objects.bulk_create(StaffRole(user=loader, site=site, role="coordinator") for site in sites)
        randomization_list = RandomizationList.objects.create(
            trial=trial,
            version=1,
            source="generated",
            seed=f"bench-{number}",
            block_sizes=[len(arms)],
            slots_per_stratum=participants,
            sha256="0" * 64,
            created_by=loader,
        )
        ids = reserve_ids(cursor, "enrollment_screening", participants)
        people = []
        for index, screening_id in enumerate(ids, start=1):
            site = sites[index % len(sites)]
            day = start + datetime.timedelta(days=index * 3)
            people.append((index, screening_id, site, day))
        written += copy_rows(
            cursor,
            Screening,
            (
                {
                    "id": screening_id,
                    "site_id": site.pk,
                    "subject_key": f"{site.code}-P{index:05d}",
                    "initials": "BX",
                    "date_of_birth": datetime.date(1950 + index % 40, 1 + index % 12, 1 + index % 28),
                    "sex": "MF"[index % 2],
                    "hospital_record_number": f"H{number:05d}{index:04d}",
                    "screening_date": day,
                    "outcome": "eligible",
                    "reasons": [],
                    "stratification": {},
                    "screened_by_id": loader.pk,
                    "protocol_version_id": version_id,
                }
                for index, screening_id, site, day in people
            ),
        )
        written += copy_rows(
            cursor,
            Consent,
            (
                {
                    "screening_id": screening_id,
                    "site_id": site.pk,
                    "version": "1.0",
                    "signed_on": day,
                    "obtained_by_id": loader.pk,
                    "protocol_version_id": version_id,
                }
                for index, screening_id, site, day in people
            ),
        )
        written += copy_rows(
            cursor,
            EligibilityAnswer,
            (
                {
                    "screening_id": screening_id,
                    "site_id": site.pk,
                    "criterion_code": criterion.code,
                    "answer": "yes" if criterion.kind == "inclusion" else "no",
                }
                for index, screening_id, site, day in people
                for criterion in criteria
            ),
        )
        moment = {sid: datetime.datetime.combine(day, datetime.time(2), tzinfo=UTC) for _i, sid, _s, day in people}
        written += copy_rows(
            cursor,
            Participant,
            (
                {
                    "screening_id": screening_id,
                    "site_id": site.pk,
                    "screening_number": f"S-{site.code}-{index:04d}",
                    "status": "randomized",
                    "randomization_number": f"{site.code}-{index:04d}",
                    "randomized_at": moment[screening_id],
                    "language": "zh-hans",
                }
                for index, screening_id, site, day in people
            ),
        )
        written += copy_rows(
            cursor,
            Slot,
            (
                {
                    "randomization_list_id": randomization_list.pk,
                    "stratum": site.code,
                    "site_id": site.pk,
                    "sequence": index,
                    "block": (index - 1) // len(arms) + 1,
                    "block_size": len(arms),
                    "arm_id": arms[(index - 1) % len(arms)].pk,
                    "participant_id": screening_id,
                    "allocated_at": moment[screening_id],
                    "protocol_version_id": version_id,
                }
                for index, screening_id, site, day in people
            ),
        )
        # Locked once its slots are in, as list_lock does: a locked list takes no new slot.
        RandomizationList.objects.filter(pk=randomization_list.pk).update(
            locked_at=datetime.datetime(2025, 1, 1, tzinfo=UTC), locked_by=loader, is_active=True
        )
        first_codes = []

        def visit_rows():
            for _index, screening_id, site, day in people:
                plan = visit_plan(schedule=protocol.schedule, day0=day)
                if not first_codes:
                    first_codes.extend(visit.code for visit in plan)
                for visit in plan:
                    done = visit.target_date <= today
                    yield {
                        **visit.fields(),
                        "participant_id": screening_id,
                        "site_id": site.pk,
                        "status": "completed" if done else "scheduled",
                        "actual_date": visit.target_date if done else None,
                        "protocol_version_id": version_id,
                    }

        written += copy_rows(cursor, Visit, visit_rows())
        form, visit_code = first_visit_form(protocol, first_codes)
        if form is not None:
            from crf.services import status_of, warnings_of

            raw = form_values(protocol, form, start)
            stored = {}
            for item in form.items:
                if item.code in raw:
                    code_list = protocol.code_list(item.code_list) if item.code_list else None
                    stored[item.code] = normalise(item, raw[item.code], code_list)
            status, warnings = status_of(form, stored), warnings_of(form, stored)
            record_ids = reserve_ids(cursor, "crf_formrecord", len(people))
            written += copy_rows(
                cursor,
                FormRecord,
                (
                    {
                        "id": record_id,
                        "participant_id": screening_id,
                        "site_id": site.pk,
                        "form_code": form.code,
                        "visit_code": visit_code,
                        "sequence": 1,
                        "status": status,
                        "protocol_version_id": version_id,
                        "warnings": warnings,
                        "created_by_id": loader.pk,
                    }
                    for record_id, (_i, screening_id, site, _d) in zip(record_ids, people, strict=True)
                ),
            )
            written += copy_rows(
                cursor,
                ItemValue,
                (
                    {
                        "record_id": record_id,
                        "participant_id": screening_id,
                        "site_id": site.pk,
                        "item_code": code,
                        "value": value,
                    }
                    for record_id, (_i, screening_id, site, _d) in zip(record_ids, people, strict=True)
                    for code, value in stored.items()
                ),
            )
    return written


def load_others(first_number: int, count: int, participants: int) -> tuple[float, int]:
    from django.contrib.auth import get_user_model

    from trialsite.audit import audit_context

    with audit_context(reason="many-trials bench load"):
        loader, _ = get_user_model().objects.get_or_create(username="bench-loader")
    files = protocol_files()
    started = time.perf_counter()
    rows = 0
    for offset in range(count):
        number = first_number + offset
        rows += load_other_trial(number, files[number % len(files)], participants, loader)
        loaded = offset + 1
        if loaded & (loaded - 1) == 0 or loaded % 50 == 0:
            # As autovacuum's analyze would, when a table has grown by a tenth: without it this
            # session's deferred foreign-key checks keep the plan made when trial X was alone (a
            # scan of every participant per visit row), and each trial loads slower than the last.
            analyze()
        if loaded % 50 == 0 or loaded == count:
            elapsed = time.perf_counter() - started
            print(
                f"  loaded {offset + 1}/{count} other trials, {rows:,} rows (+ their audit rows) in {elapsed:.0f} s",
                flush=True,
            )
    return time.perf_counter() - started, rows


# --- what is measured ---------------------------------------------------------------------------


def addresses(world: dict) -> list[tuple[str, str, str]]:
    """(what, role, address) of trial X's pages and API lists, inside the trial's own prefix."""
    from schedules.models import Visit

    trial, site = world["trial"], world["site"]
    participant = site.participants.filter(randomized_at__isnull=False).order_by("pk").first()
    visit = Visit.objects.filter(participant=participant).order_by("sequence").first()
    prefix = f"/t/{trial.nct_id}"
    return [
        ("home", "coordinator", f"{prefix}/"),
        ("home", "pharmacist", f"{prefix}/"),
        ("home", "monitor", f"{prefix}/"),
        ("screening log", "monitor", f"{prefix}/screening/"),
        ("participant list", "coordinator", f"{prefix}/participants/"),
        ("participant page", "coordinator", f"{prefix}/participants/{participant.pk}/"),
        ("participant forms", "coordinator", f"{prefix}/participants/{participant.pk}/forms/"),
        ("visit page", "coordinator", f"{prefix}/visits/{visit.pk}/"),
        ("pharmacy", "pharmacist", f"{prefix}/pharmacy/"),
        ("reminders", "coordinator", f"{prefix}/reminders/"),
        ("reports", "monitor", f"{prefix}/reports/"),
        ("audit trail", "monitor", f"{prefix}/audit/"),
        ("randomization lists", "statistician", f"{prefix}/randomization/lists/"),
        ("API participants", "coordinator", f"{prefix}/api/v1/participants/"),
        ("API screenings", "coordinator", f"{prefix}/api/v1/screenings/"),
        ("API visits", "coordinator", f"{prefix}/api/v1/visits/"),
        ("API pharmacy queue", "pharmacist", f"{prefix}/api/v1/pharmacy/queue/"),
        ("API audit events", "monitor", f"{prefix}/api/v1/audit-events/"),
        ("API sites", "coordinator", f"{prefix}/api/v1/sites/"),
        ("API enrollment report", "monitor", f"{prefix}/api/v1/reports/enrollment/"),
    ]


def pages_read(captured) -> int:
    """Shared buffers (8 kB pages, hit or read) the captured SELECTs touch, by EXPLAIN (ANALYZE,
    BUFFERS): the database's work for a page, which, unlike its time, the other processes of a
    shared machine do not change."""
    import json

    from django.db import connection

    pages = 0
    for query in captured.captured_queries:
        sql = query["sql"].strip()
        if sql.startswith("DECLARE"):
            sql = sql[sql.index(" FOR ") + len(" FOR ") :]
        if not sql.upper().startswith(("SELECT", "WITH")):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
        top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
        pages += top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    return pages


def measure_address(client, path: str, runs: int) -> tuple[list[float], int, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        client.get(path)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    return times, len(queries), response.status_code, pages_read(queries)


def measure_randomization(world: dict, count: int) -> tuple[list[float], int]:
    """Times and median queries of one randomization of trial X. Each fresh participant and its
    randomization are rolled back afterwards, so that both measurements find trial X as it was
    and its exports count the same rows."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from randomization.services import participant_randomize
    from tests import factories

    coordinator = world["users"]["coordinator"]
    times, queries = [], []
    for _ in range(count):
        with transaction.atomic():
            participant = factories.make_participant(world["site"], by=coordinator)
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                participant_randomize(participant=participant, randomized_by=coordinator)
                times.append((time.perf_counter() - started) * 1000)
            queries.append(len(captured.captured_queries))
            transaction.set_rollback(True)
    return times, round(statistics.median(queries))


def measure_exports(world: dict, runs: int) -> dict[str, tuple[list[float], int, int, int]]:
    """(times in ms, queries, rows, buffers) of trial X's subjects and visits CSV and its ODM, as the
    statistician (unblinded) would have them written by the export worker."""
    import io

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reports import exports, selectors

    user = world["users"]["statistician"]
    scope = selectors.report_scope(user, trial=world["trial"])
    stamp = exports.make_stamp(scope, export_id=None)
    writers = {
        "export subjects CSV": lambda: exports.write_csv(exports.tables_for("subjects", scope), io.StringIO(), stamp),
        "export visits CSV": lambda: exports.write_csv(exports.tables_for("visits", scope), io.StringIO(), stamp),
        "export ODM XML": lambda: exports.write_odm(scope, io.StringIO(), stamp),
    }
    figures = {}
    for what, write in writers.items():
        write()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            write()
            times.append((time.perf_counter() - started) * 1000)
        with CaptureQueriesContext(connection) as captured:
            rows = write()
        figures[what] = (times, len(captured.captured_queries), rows, pages_read(captured))
    return figures


def measure_all(world: dict, runs: int, randomizations: int) -> dict[str, tuple[list[float], int, str, int | None]]:
    """what -> (times in ms, queries, a note: the HTTP status or the row count, buffers)."""
    from django.conf import settings
    from django.test import Client

    figures = {}
    clients = {}
    for what, role, path in addresses(world):
        if role not in clients:
            clients[role] = Client(HTTP_HOST="localhost")
            clients[role].force_login(world["users"][role])
            clients[role].cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
        times, queries, status, pages = measure_address(clients[role], path, runs)
        figures[f"{what} ({role})"] = (times, queries, f"HTTP {status}", pages)
    for what, (times, queries, rows, pages) in measure_exports(world, max(5, runs // 2)).items():
        figures[what] = (times, queries, f"{rows} rows", pages)
    times, queries = measure_randomization(world, randomizations)
    figures["randomization (in process)"] = (times, queries, "", None)
    return figures


def copy_database(superuser_url: str, template: str, name: str) -> tuple[str, str]:
    """A copy of the database `template` (trial X alone) as `name` on the server of
    `superuser_url`: its (DATABASE_URL, DATABASE_OWNER_URL). The template must have no
    connection open meanwhile."""
    import psycopg
    from django.db import connections

    from trialsite.devstack import create_roles

    connections.close_all()
    parsed = urlparse(superuser_url)
    admin_url = parsed._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return create_roles(parsed._replace(path=f"/{name}").geturl(), name)


def use_database(name: str, owner_url: str) -> None:
    """Point this process's connection (and the owner's, for ANALYZE) at the database `name`."""
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name
    os.environ["DATABASE_OWNER_URL"] = owner_url


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000, help="trials in the database at the end, X included")
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15, help="timed requests per address and database")
    parser.add_argument("--randomizations", type=int, default=15, help="per database")
    parser.add_argument("--rounds", type=int, default=3, help="alternations between the two databases")
    options = parser.parse_args()

    from trialsite.devstack import create_roles

    superuser_url = base_database_url()
    name = database_name("trialsite_bench_many")
    app_url, owner_url = create_roles(scratch_database_url(name), name)
    env = bench_environment(app_url, DATABASE_OWNER_URL=owner_url)
    manage(env, "migrate", "--no-input")
    manage(env, "collectstatic", "--no-input")  # the production storage reads its manifest
    setup_django(app_url)
    os.environ["DATABASE_OWNER_URL"] = owner_url

    from django.db import connection

    started = time.perf_counter()
    world = build_trial_x(options.participants, spare=2 * options.randomizations)
    print(
        f"many trials: trial X ({world['trial'].nct_id}, site {world['site'].code}) built through the services "
        f"in {time.perf_counter() - started:.0f} s: {options.participants} participants randomized, "
        f"{world['forms_saved']} first visit forms saved",
        flush=True,
    )
    analyze(vacuum=True)

    crowded_name = f"{name}_crowded"
    _app_url, crowded_owner_url = copy_database(superuser_url, name, crowded_name)
    use_database(crowded_name, crowded_owner_url)
    others = options.trials - 1
    seconds, rows = load_others(2, others, options.participants)
    analyze(vacuum=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM trialsite_trial")
        trials = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM trialsite_auditevent")
        audit_rows = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    per_trial = seconds / max(1, others)
    print(
        f"loaded {others} other trials ({rows:,} rows by COPY, audit triggers on) in {seconds:.0f} s = "
        f"{per_trial:.2f} s per trial; 999 would take {999 * per_trial / 60:.0f} min. "
        f"Now {trials} trials, {audit_rows:,} audit rows, database {size}",
        flush=True,
    )

    rounds = max(1, options.rounds)
    alone, crowded = {}, {}
    for _round in range(rounds):
        for figures, database, owner in ((alone, name, owner_url), (crowded, crowded_name, crowded_owner_url)):
            use_database(database, owner)
            measured = measure_all(world, max(1, options.runs // rounds), max(1, options.randomizations // rounds))
            for what, (times, queries, note, pages) in measured.items():
                figures[what] = (figures.get(what, ([],))[0] + times, queries, note, pages)

    print(
        f"\ntrial X alone and among {trials} trials: server time (best and median of the runs), queries, and "
        "shared buffers the SELECTs touch (EXPLAIN BUFFERS). The time is judged on the best run; on a shared "
        "machine even that carries other processes' load, which the buffers do not (printed, not judged: "
        "an index one level deeper adds a page per lookup)."
    )
    for what, (times, queries, note, pages) in alone.items():
        after, after_queries, after_note, after_pages = crowded[what]
        print(
            f"  {what:<36} best {min(times):6.1f} median {statistics.median(times):6.1f} ms {queries:3d} q "
            f"{pages if pages is not None else '-':>6} buf {note:<10} -> best {min(after):6.1f} median "
            f"{statistics.median(after):6.1f} ms {after_queries:3d} q {after_pages if after_pages is not None else '-':>6} "
            f"buf {after_note}"
        )
    for what, (times, queries, note, _pages) in alone.items():
        after, after_queries, after_note, _after_pages = crowded[what]
        report(
            f"{what}: queries, 1 -> {trials} trials",
            f"{queries} -> {after_queries}" + ("" if note == after_note else f" ({note} -> {after_note})"),
            "same",
            queries == after_queries and note == after_note,
        )
        best, best_after = min(times), min(after)
        report(
            f"{what}: time, 1 -> {trials} trials",
            f"{best:.1f} -> {best_after:.1f} ms ({(best_after / best - 1) * 100:+.0f}%)",
            f"<= +{TIME_TOLERANCE * 100:.0f}%",
            best_after <= best * (1 + TIME_TOLERANCE),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
