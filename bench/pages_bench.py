"""Page load of every page the role walks of issue 16 visit: server time (median and p95) and
query count per page, in process through django.test.Client with the production-like settings
(DEBUG off), on a realistic site: the demo plus a few hundred screenings, half of them randomized,
with the first cycle recorded and kits dispensed for most. Runs against a scratch database.

    .venv/bin/python bench/pages_bench.py [--screenings 300] [--runs 30]

One line per page; the target is a median under 100 ms (issue 16), printed beside each."""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_environment, load_first_protocol, manage, report, scratch_database_url, setup_django

ALL_GOOD = {"IN1": "yes", "IN2": "yes", "EX1": "no", "EX2": "no", "EX3": "no"}


def build_site(screenings: int) -> dict:
    """The demo, then `screenings` more patients: one in ten a screen failure, the eligible ones
    signed, two in three of those randomized, the first cycle recorded for most of the randomized."""
    import os

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from dosing import services as dosing
    from enrollment import services as enrollment
    from randomization import services as randomization
    from trialsite.management.commands.load_demo import DEMO_PASSWORD
    from trialsite.models import Site

    settings.DEBUG = True  # load_demo is for development only; the pages are measured with DEBUG off
    call_command("load_demo", stdout=open(os.devnull, "w"))
    settings.DEBUG = False
    users = {user.username: user for user in get_user_model().objects.all()}
    site = Site.objects.order_by("id").first()
    today = timezone.localdate(timezone=site.zone)
    expiry = today + datetime.timedelta(days=730)
    contents = dosing.kit_contents_by_type(site.trial)
    lots = {
        (kit_type, content): (f"BENCH-{kit_type}-{content[:3]}", expiry)
        for kit_type, kit_contents in contents.items()
        for content in kit_contents
    }
    dosing.kit_list_generate(
        trial=site.trial, packaging_lot="BENCH-PL", kits_per_type=600, lots=lots, created_by=users["supply"]
    )
    shipment = dosing.shipment_create(site=site, per_content=dict.fromkeys(contents, 150), shipped_by=users["supply"])
    dosing.shipment_receive(shipment=shipment, received_by=users["pharmacist"])
    dosing.shipment_create(site=site, per_content=dict.fromkeys(contents, 5), shipped_by=users["supply"])  # in transit

    randomized = 0
    for number in range(screenings):
        answers = {**ALL_GOOD, "EX1": "yes"} if number % 10 == 9 else ALL_GOOD
        screening = enrollment.screening_create(
            site=site,
            screened_by=users["coordinator"],
            initials="BX",
            date_of_birth=datetime.date(1950 + number % 40, 1 + number % 12, 1 + number % 28),
            sex="MF"[number % 2],
            hospital_record_number=f"BENCH{number:05d}",
            screening_date=today,
            consent_version="2.1",
            consent_date=today,
            answers=answers,
        )
        participant = getattr(screening, "participant", None)
        if participant is None or number % 3 == 2:
            continue
        enrollment.eligibility_sign(participant=participant, signer=users["investigator"], password=DEMO_PASSWORD)
        if randomized >= 180:  # the demo list holds 200 slots for the site
            continue
        participant = randomization.participant_randomize(participant=participant, randomized_by=users["coordinator"])
        randomized += 1
        if number % 4 == 3:
            continue
        c1 = participant.visits.order_by("sequence").first()
        outcome = dosing.visit_record(
            visit=c1,
            actual_date=today,
            recorded_by=users["coordinator"],
            weight_kg=Decimal("60"),
            neutrophils=3500,
            platelets=90000 if number % 8 == 0 else 210000,
            alt_uln=Decimal("1"),
            ast_uln=Decimal("1"),
        )
        for kit in outcome.kits if number % 2 == 0 else ():
            dosing.kit_dispense(kit=kit, label_number=kit.kit_number, dispensed_by=users["pharmacist"])
    return {"users": users, "site": site, "randomized": randomized}


def pages(world: dict) -> list[tuple[str, str, str]]:
    """(what, who reads it, address) for every page of the walks."""
    from enrollment.models import Participant
    from schedules.models import Visit

    randomized = Participant.objects.filter(randomization_number__isnull=False).order_by("-pk").first()
    signed = Participant.objects.filter(randomization_number__isnull=True, eligibility_signature__isnull=False).first()
    held = Visit.objects.filter(participant__randomization_number__isnull=False, status="completed").first()
    next_visit = randomized.visits.filter(status="scheduled").order_by("sequence").first()
    found = [
        *((f"home ({role})", role, "/") for role in ("coordinator", "investigator", "pharmacist", "supply")),
        *((f"home ({role})", role, "/") for role in ("statistician", "monitor")),
        ("screening form", "coordinator", "/screening/new/"),
        ("screening log", "monitor", "/screening/"),
        ("participant list", "coordinator", "/participants/"),
        ("participant page", "coordinator", f"/participants/{randomized.pk}/"),
        ("randomize confirm", "coordinator", f"/participants/{signed.pk}/randomize/"),
        ("visit record", "coordinator", f"/visits/{next_visit.pk}/record/"),
        ("visit page (first cycle)", "coordinator", f"/visits/{held.pk}/"),
        ("awaiting signature", "investigator", "/participants/awaiting-signature/"),
        ("unblind form", "investigator", f"/participants/{randomized.pk}/unblind/"),
        ("pharmacy", "pharmacist", "/pharmacy/"),
        ("supply", "supply", "/supply/"),
        ("randomization lists", "statistician", "/randomization/lists/"),
        ("code-break sheets", "statistician", "/randomization/code-break-sheets/"),
        ("reports", "monitor", "/reports/"),
        ("audit trail", "monitor", "/audit/"),
        ("audit trail NT-0001", "monitor", "/audit/?subject=NT-0001"),
        ("reminders", "coordinator", "/reminders/"),
        # A participant's screening shares its id.
        ("screening page (randomized)", "coordinator", f"/screening/{randomized.pk}/"),
    ]
    return found


def measure(client, path: str, runs: int) -> tuple[list[float], int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):  # warm: template loading, translations, the session
        client.get(path)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    return times, len(queries), response.status_code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--screenings", type=int, default=300)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--language", default="en")
    options = parser.parse_args()

    database_url = scratch_database_url("trialsite_bench_pages")
    env = bench_environment(database_url)
    manage(env, "migrate", "--no-input")
    load_first_protocol(env)
    manage(env, "collectstatic", "--no-input")  # the production storage reads its manifest
    setup_django(database_url)

    from django.conf import settings
    from django.test import Client

    from enrollment.models import Participant

    started = time.perf_counter()
    world = build_site(options.screenings)
    print(
        f"pages bench: {Participant.objects.count()} participants ({world['randomized'] + 1} randomized), "
        f"built in {time.perf_counter() - started:.0f} s; {options.runs} runs per page, language {options.language}"
    )
    clients = {}
    over = []
    for what, role, path in pages(world):
        if role not in clients:
            clients[role] = Client(HTTP_HOST="localhost")
            clients[role].force_login(world["users"][role])
            clients[role].cookies[settings.LANGUAGE_COOKIE_NAME] = options.language
        times, queries, status = measure(clients[role], path, options.runs)
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(
            f"  {what:<30} {role:<13} median {median:6.1f} ms  p95 {p95:6.1f} ms  {queries:3d} queries  HTTP {status}"
        )
        if median >= 100 or status != 200:
            over.append(what)
        page = what if f"({role})" in what else f"{what} ({role})"
        report(f"page {page} median", f"{median:.1f} ms, HTTP {status}", "< 100 ms (issue 16)", what not in over)
    print(f"  over 100 ms or not 200: {', '.join(over) if over else 'none'}")


if __name__ == "__main__":
    main()
