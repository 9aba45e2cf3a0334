"""What the audit chain costs the people randomizing: randomizations per second in process
(randomization.services.participant_randomize, as the restricted application role) with no
chain extension running, and with `trial_audit_chain_extend()` running back to back the whole
time (the worst case: beat runs it once a minute). Then how fast the extension hashes a backlog.

    .venv/bin/python bench/audit_chain_bench.py [--participants 300] [--threads 1 8] [--runs 3]

A scratch database `trialsite_bench_chain` is made on the server of DATABASE_URL (a superuser),
with the owner and application roles of `make run`."""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report, scratch_trial_database


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    scratch_trial_database("trialsite_bench_chain")

    from django.db import connection

    from randomization import services
    from tests import factories
    from trialsite import audit
    from trialsite.models import AuditEvent, Role, Site, Trial

    trial = Trial.objects.get()
    sites = [Site.objects.get(code="NT")] + [factories.make_site(trial, code) for code in ("B2", "B3", "B4")]
    coordinators = {site.pk: factories.make_user(Role.COORDINATOR, site, username=f"c-{site.code}") for site in sites}
    statistician = factories.make_user(Role.STATISTICIAN, sites[0], username="statistician")
    rounds = 2 * len(options.threads) * options.runs
    randomization_list = services.list_generate(
        trial=trial,
        seed="bench-chain",
        slots_per_stratum=options.participants * rounds + 500,
        created_by=statistician,
    )
    services.list_lock(randomization_list=randomization_list, locked_by=statistician, password=factories.PASSWORD)
    audit.chain_extend()
    print(
        f"audit chain: {options.participants} randomizations per run, {options.runs} runs per setting, "
        f"PostgreSQL {connection.pg_version // 10000}, as the application role"
    )

    def randomize_all(participants, threads: int) -> float:
        chunks = [participants[number::threads] for number in range(threads)]
        errors = []

        def work(chunk):
            try:
                for participant in chunk:
                    services.participant_randomize(
                        participant=participant, randomized_by=coordinators[participant.site_id]
                    )
            except Exception as error:  # reported below
                errors.append(error)
            finally:
                connection.close()

        workers = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise errors[0]
        return len(participants) / elapsed

    chainer_errors: list[BaseException] = []

    def extending(stop: threading.Event, pause: float):
        try:
            while not stop.is_set():
                audit.chain_extend()
                stop.wait(pause)
        except BaseException as error:  # re-raised in the main thread: a dead chainer costs nothing
            chainer_errors.append(error)
        finally:
            connection.close()

    settings = {"without": None, "every second": 1.0, "back to back": 0.0}

    for threads in options.threads:
        figures = {setting: [] for setting in settings}
        for _ in range(options.runs):
            for setting, pause in settings.items():
                participants = [
                    factories.make_participant(sites[index % len(sites)], by=coordinators[sites[index % len(sites)].pk])
                    for index in range(options.participants)
                ]
                audit.chain_extend()
                stop = threading.Event()
                chainer = threading.Thread(target=extending, args=(stop, pause))
                if pause is not None:
                    chainer.start()
                figures[setting].append(randomize_all(participants, threads))
                stop.set()
                if pause is not None:
                    chainer.join()
                if chainer_errors:
                    raise chainer_errors[0]
        medians = {setting: statistics.median(values) for setting, values in figures.items()}
        base = medians["without"]
        print(
            f"randomizations/s threads={threads:<2} "
            + "   ".join(
                f"chain extension {setting}: {value:6.1f}"
                + ("" if setting == "without" else f" ({(value / base - 1) * 100:+.1f}%)")
                for setting, value in medians.items()
            )
        )
        # The worst case stands for the chain's cost: beat runs the extension once a minute.
        cost = max(0.0, 1 - medians["back to back"] / base) * 100
        report(
            f"audit chain cost to randomization throughput, {threads} thread(s)",
            f"{cost:.1f}% (extension back to back)",
            "<= 20%",
            cost <= 20,
        )

    # A backlog: everything since the last extension, hashed in one go.
    audit.chain_extend()
    before = AuditEvent.objects.count()
    for index in range(100):
        site = sites[index % len(sites)]
        participant = factories.make_participant(site, by=coordinators[site.pk])
        services.participant_randomize(participant=participant, randomized_by=coordinators[site.pk])
    written = AuditEvent.objects.count() - before
    started = time.perf_counter()
    chained = audit.chain_extend()
    elapsed = time.perf_counter() - started
    print(
        f"chain extension: a backlog of {chained:,} audit rows ({written / 100:.0f} per participant screened, "
        f"enrolled and randomized) hashed in {elapsed:.2f}s = {chained / elapsed:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
