"""HTTP benchmarks with gunicorn serving the app under the production settings, on loopback:

1. randomization throughput with 8, 32 and 64 concurrent clients (2,000 participants over 4
   sites), against the framework's floor (GET /api/v1/me/, authenticated) measured in the same
   run; afterwards checks that no slot was used twice and none skipped;
2. kit assignment under concurrency (dosing visits recorded at once, kits assigned);
3. list pages with 10,000 participants: server time and query count.

    .venv/bin/python bench/http_bench.py [--participants 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Gunicorn,
    analyze,
    bench_environment,
    database_name,
    dosing_visit_body,
    dumps,
    load_first_protocol,
    manage,
    median_of,
    report,
    run_load,
    scratch_database_url,
    setup_django,
)

CLIENT_COUNTS = (8, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-participants", type=int, default=10_000)
    options = parser.parse_args()

    from trialsite.devstack import create_roles

    # gunicorn connects as the restricted application role, migrate as the owner, as in production.
    database_url, owner_url = create_roles(
        scratch_database_url("trialsite_bench_http"), database_name("trialsite_bench_http")
    )
    env = bench_environment(database_url, DATABASE_OWNER_URL=owner_url)
    os.environ["DATABASE_OWNER_URL"] = owner_url
    manage(env, "migrate", "--no-input")
    load_first_protocol(env)
    manage(env, "collectstatic", "--no-input")
    setup_django(database_url)

    cast = build_cast()
    with Gunicorn(env, workers=4) as server:
        randomization_section(server, cast, options)
        kit_section(server, cast, options)
    pages_section(cast, options)


def build_cast():
    from tests import factories
    from trialsite.models import Role, Site, Trial

    trial = Trial.objects.get()
    sites = [Site.objects.get(code="NT")] + [factories.make_site(trial, code) for code in ("B2", "B3", "B4")]
    cast = {"sites": sites, "coordinators": [], "tokens": {}}
    for site in sites:
        for role in (Role.COORDINATOR, Role.PHARMACIST, Role.STATISTICIAN, Role.SUPPLY_MANAGER):
            user = factories.make_user(role, site, username=f"{role}-{site.code}")
            cast["tokens"][(role, site.code)] = factories.api_key(user)
            cast[(role, site.code)] = user
    return cast


def randomization_section(server, cast, options) -> None:
    try:
        from randomization import services as randomization_services

        randomization_services.list_generate  # noqa: B018
    except (ImportError, AttributeError):
        print("randomization: the randomization services are not available in this build")
        return
    from randomization.models import Slot
    from tests import factories
    from trialsite.models import Role

    sites = cast["sites"]
    per_site = options.participants // len(sites)
    statistician = cast[(Role.STATISTICIAN, "NT")]
    trial = sites[0].trial
    total_needed = per_site * len(CLIENT_COUNTS) * options.runs
    # Room for the kit-assignment section's participants too.
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="bench-seed-not-secret", slots_per_stratum=total_needed + 1000, created_by=statistician
    )
    randomization_services.list_lock(
        randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD
    )
    print(
        f"randomization: {options.participants:,} participants per round over {len(sites)} sites, "
        f"{options.runs} runs per client count, gunicorn 4 workers"
    )
    for clients in CLIENT_COUNTS:
        floor_runs, randomize_runs = [], []
        for _ in range(options.runs):
            participants = [
                factories.make_participant(site, by=cast[(Role.COORDINATOR, site.code)])
                for site in sites
                for _ in range(per_site)
            ]
            tokens = [cast["tokens"][(Role.COORDINATOR, participant.site.code)] for participant in participants]
            floor_runs.append(
                run_load(
                    name="floor GET /api/v1/me/",
                    port=server.port,
                    clients=clients,
                    requests=[("GET", "/api/v1/me/", None)] * len(participants),
                    token_for=tokens.__getitem__,
                )
            )
            randomize_runs.append(
                run_load(
                    name="POST .../randomize/",
                    port=server.port,
                    clients=clients,
                    requests=[("POST", f"/api/v1/participants/{p.pk}/randomize/", dumps({})) for p in participants],
                    token_for=tokens.__getitem__,
                )
            )
        floor, randomize = median_of(floor_runs), median_of(randomize_runs)
        print("  " + floor.line())
        print("  " + randomize.line())
        ratio = randomize.requests_per_second / floor.requests_per_second
        print(f"  ratio randomize/floor throughput at {clients} clients: {ratio:.2f}")
        if clients == 32:
            report("randomization/floor throughput, 32 clients", f"{ratio:.2f}", ">= 0.50", ratio >= 0.5)
            report(
                "randomization p99, 32 clients",
                f"{randomize.percentile(99):.0f} ms",
                f"<= {2 * floor.percentile(99):.0f} ms (2x floor p99)",
                randomize.percentile(99) <= 2 * floor.percentile(99),
            )
            report(
                "randomization answered 2xx, 32 clients",
                f"{sum(n for s, n in randomize.statuses.items() if s < 300)}/{len(randomize.latencies)}",
                "all",
                all(status < 300 for status in randomize.statuses),
            )
    used = Slot.objects.filter(randomization_list=randomization_list, participant__isnull=False)
    gaps = 0
    for stratum in used.values_list("stratum", flat=True).distinct():
        sequences = sorted(used.filter(stratum=stratum).values_list("sequence", flat=True))
        gaps += sum(1 for expected, got in zip(range(1, len(sequences) + 1), sequences, strict=True) if expected != got)
    print(
        f"  verify: {used.count():,} slots used, {used.values('participant').distinct().count():,} participants, "
        f"{gaps} skipped or out of order"
    )
    doubled = used.count() - used.values("participant").distinct().count()
    report(
        "randomization slots used twice or skipped", f"{doubled} twice, {gaps} skipped", "0", not doubled and not gaps
    )


def kit_section(server, cast, options) -> None:
    from django.utils import timezone

    from dosing.models import Kit
    from randomization.services import participant_randomize
    from tests import dosing_factories, factories
    from trialsite.models import Role

    sites = cast["sites"]
    count = min(options.participants, 800)
    # The visit date in the sites' zone, as the service checks it: the machine's date is a day
    # behind Shanghai's from 16:00 UTC, and every visit was refused as before randomization.
    today = timezone.localdate(timezone=sites[0].zone)
    visits, tokens = [], []
    for index in range(count):
        site = sites[index % len(sites)]
        coordinator = cast[(Role.COORDINATOR, site.code)]
        participant = participant_randomize(
            participant=factories.make_participant(site, by=coordinator), randomized_by=coordinator
        )
        visits.append(participant.visits.order_by("sequence").first())
        tokens.append(cast["tokens"][(Role.COORDINATOR, site.code)])
    for site in sites:
        for kit_type in site.trial.protocol.kit_types:
            for content in ("active", "placebo"):
                # Enough for every participant of the site to need this content.
                for _ in range(count // len(sites) + 5):
                    dosing_factories.make_kit(
                        kit_type=kit_type, content=content, site=site, expiry=today + datetime.timedelta(days=400)
                    )
    body = dosing_visit_body(today)
    floor = run_load(
        name="floor GET /api/v1/me/",
        port=server.port,
        clients=32,
        requests=[("GET", "/api/v1/me/", None)] * len(visits),
        token_for=tokens.__getitem__,
    )
    result = run_load(
        name="POST visits/<pk>/record/",
        port=server.port,
        clients=32,
        requests=[("POST", f"/api/v1/visits/{visit.pk}/record/", body) for visit in visits],
        token_for=tokens.__getitem__,
    )
    print(f"kit assignment: {count} dosing visits recorded at once, 2 kits each")
    print("  " + floor.line())
    print("  " + result.line())
    ratio = result.requests_per_second / floor.requests_per_second
    report("kit assignment/floor throughput, 32 clients", f"{ratio:.2f}", ">= 0.50", ratio >= 0.5)
    report(
        "kit assignment p99, 32 clients",
        f"{result.percentile(99):.0f} ms",
        f"<= {2 * floor.percentile(99):.0f} ms (2x floor p99)",
        result.percentile(99) <= 2 * floor.percentile(99),
    )
    assigned = Kit.objects.filter(visit__in=visits)
    print(
        f"  verify: {assigned.count():,} kits assigned to {count} visits; "
        f"{assigned.values('pk').distinct().count():,} distinct kits; "
        f"{sum(1 for visit in visits if visit.kits.count() != 2)} visits without exactly 2 kits"
    )


def pages_section(cast, options) -> None:
    from tests import factories
    from trialsite.models import Role

    site = cast["sites"][0]
    coordinator = cast[(Role.COORDINATOR, site.code)]
    pharmacist = cast[(Role.PHARMACIST, site.code)]
    print(
        f"pages: participant list and pharmacy queue at {site.code}, in-process server time, "
        "measured at two sizes to show the query count does not grow with the rows"
    )
    pages = (
        (coordinator, "/"),
        (pharmacist, "/"),
        (coordinator, "/participants/"),
        (coordinator, "/api/v1/participants/"),
        (pharmacist, "/pharmacy/"),
        (pharmacist, "/api/v1/pharmacy/queue/"),
        (coordinator, "/reminders/"),
    )
    smaller = site.participants.count()
    at_smaller = {(user.pk, url): measure_page(user, url) for user, url in pages}
    for _ in range(max(0, options.page_participants - smaller)):
        factories.make_participant(site, by=coordinator)
    larger = site.participants.count()
    # Thousands of rows just inserted: let the planner see them, as autovacuum's analyze would
    # within a minute on a live database (without it the list page sorted every row: 85 ms).
    analyze()
    for user, url in pages:
        status, median_ms, queries = measure_page(user, url)
        was = at_smaller[(user.pk, url)]
        print(
            f"  GET {url:<24} status={status} median={median_ms:6.1f}ms at {larger:,} participants "
            f"(was {was[1]:.1f}ms at {smaller:,}); queries={queries} (was {was[2]})"
        )
        role = user.username.split("-")[0]
        report(
            f"GET {url} ({role}) median at {larger:,}", f"{median_ms:.1f} ms, HTTP {status}", "< 50 ms", median_ms < 50
        )
        report(
            f"GET {url} ({role}) queries at {larger:,}",
            f"{queries} (was {was[2]} at {smaller:,})",
            "constant",
            queries == was[2] and status == 200,
        )


def measure_page(user, url) -> tuple[int, float, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user)
    times, queries, status = [], [], None
    for _ in range(7):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, HTTP_HOST="127.0.0.1")
            times.append(time.perf_counter() - started)
        queries.append(len(captured.captured_queries))
        status = response.status_code
    return status, statistics.median(times) * 1000, round(statistics.median(queries))


if __name__ == "__main__":
    main()
