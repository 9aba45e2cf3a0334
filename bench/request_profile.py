"""Where one API request's time goes, in process, under the production settings: the floor
(GET /api/v1/me/), a randomization (POST participants/<pk>/randomize/) and a dosing visit recorded
with its kits (POST visits/<pk>/record/), each as bench/http_bench.py sends them (a token, JSON).

For each: the median server time without a profiler, the statements it sends and their share of
that time (measured at the client, so it includes the triggers, the commit's statements and the
round trips), then cProfile's heaviest functions of the same requests. This is the measurement
behind what the note of issue 20 says bounds each throughput figure that MISSes.

    .venv/bin/python bench/request_profile.py [--requests 200] [--top 12]

A scratch database `trialsite_bench_profile` is made on the server of DATABASE_URL (a superuser),
with the owner and application roles of `make run`."""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dosing_visit_body, scratch_trial_database


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="measured per request kind, and as many profiled")
    parser.add_argument("--top", type=int, default=12, help="functions listed per profile")
    parser.add_argument(
        "--statements", action="store_true", help="also list the statements of one request of each kind"
    )
    parser.add_argument(
        "--sort", default="tottime", help="pstats order of the functions: tottime (own time) or cumulative"
    )
    parser.add_argument("--only", help="profile only the requests whose label contains this (record, randomize)")
    options = parser.parse_args()

    scratch_trial_database("trialsite_bench_profile")

    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from randomization import services
    from tests import dosing_factories, factories
    from trialsite.models import Role, Site, Trial

    trial = Trial.objects.get()
    site = Site.objects.get(code="NT")
    coordinator = factories.make_user(Role.COORDINATOR, site, username="profile-coordinator")
    statistician = factories.make_user(Role.STATISTICIAN, site, username="profile-statistician")
    # Twice the measured requests of each kind (measured, then profiled), and a few to warm up.
    count = 2 * options.requests + 10
    # Every participant may fall in one stratum: the randomized ones and those randomized to record a visit.
    randomization_list = services.list_generate(
        trial=trial, seed="profile-seed-not-secret", slots_per_stratum=2 * count, created_by=statistician
    )
    services.list_lock(randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD)
    client = Client(HTTP_AUTHORIZATION=f"Token {factories.api_key(coordinator)}", SERVER_NAME="127.0.0.1")

    participants = [factories.make_participant(site, by=coordinator) for _ in range(count)]
    recorded = [
        services.participant_randomize(
            participant=factories.make_participant(site, by=coordinator), randomized_by=coordinator
        )
        .visits.order_by("sequence")
        .first()
        for _ in range(count)
    ]
    today = timezone.localdate(timezone=site.zone)
    for kit_type in trial.protocol.kit_types:
        for content in ("active", "placebo"):
            for _ in range(count + 10):
                dosing_factories.make_kit(
                    kit_type=kit_type, content=content, site=site, expiry=today + datetime.timedelta(days=400)
                )
    visit_body = dosing_visit_body(today)
    kinds = (
        ("floor GET /api/v1/me/", [("get", "/api/v1/me/", None)] * count),
        (
            "POST participants/<pk>/randomize/",
            [("post", f"/api/v1/participants/{participant.pk}/randomize/", "{}") for participant in participants],
        ),
        (
            "POST visits/<pk>/record/",
            [("post", f"/api/v1/visits/{visit.pk}/record/", visit_body) for visit in recorded],
        ),
    )

    def send(method: str, path: str, body: str | None) -> None:
        if method == "get":
            answer = client.get(path)
        else:
            answer = client.post(path, data=body, content_type="application/json")
        if answer.status_code != 200:
            raise SystemExit(f"{method.upper()} {path}: HTTP {answer.status_code} {answer.content[:300]!r}")

    # Per measured request, the time of each statement it sent.
    statements: list[list[float]] = []
    # The text and time of each statement of the latest measured request.
    sent: list[tuple[str, float]] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took = time.perf_counter() - started
            statements[-1].append(took)
            sent.append((" ".join(sql.split()), took))

    print(f"one request in process, production settings, PostgreSQL {connection.pg_version // 10000}")
    for label, requests in kinds:
        if options.only and options.only not in label:
            continue
        warm, measured, profiled = (
            requests[:10],
            requests[10 : 10 + options.requests],
            requests[10 + options.requests :],
        )
        for request in warm:
            send(*request)
        totals = []
        statements.clear()
        with connection.execute_wrapper(timed):
            for request in measured:
                statements.append([])
                sent.clear()
                started = time.perf_counter()
                send(*request)
                totals.append(time.perf_counter() - started)
        if options.statements:
            # The last measured request's statements, in the order it sent them.
            for index, (sql_text, took) in enumerate(sent, start=1):
                print(f"  {index:>2}. {took * 1000:6.2f} ms  {sql_text[:160]}")
        median = statistics.median(totals) * 1000
        sql = statistics.median(sum(times) for times in statements) * 1000
        print(
            f"\n{label}: median {median:.2f} ms, statements {sorted({len(times) for times in statements})}, "
            f"their median {sql:.2f} ms ({100 * sql / median:.0f}%), the rest (Python) {median - sql:.2f} ms"
        )
        profile = cProfile.Profile()
        for request in profiled:
            profile.enable()
            send(*request)
            profile.disable()
        listing = io.StringIO()
        pstats.Stats(profile, stream=listing).sort_stats(options.sort).print_stats(options.top)
        # The profile's own header and the function table only, not the blank lines around them.
        print("\n".join(line for line in listing.getvalue().splitlines() if line.strip()))


if __name__ == "__main__":
    main()
