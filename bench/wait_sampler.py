"""A sampling profiler of the database side of a bench: every 20 ms it reads what each of the
bench database's sessions is doing (pg_stat_activity: running, or waiting and on what) and prints
the shares at the end. Run beside bench/http_bench.py to see what bounds the randomization
throughput: CPU (running), locks (which kind), or the commit's disk flush (IO / WALSync).

    .venv/bin/python bench/wait_sampler.py --database trialsite_bench_http --seconds 120

Connects with DATABASE_URL's role (it must see other sessions: a superuser, or pg_read_all_stats)."""

from __future__ import annotations

import argparse
import collections
import os
import time
from urllib.parse import urlparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True, help="name (or suffix) of the bench's database")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--interval", type=float, default=0.02)
    options = parser.parse_args()

    import psycopg

    url = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    admin = url._replace(scheme="postgresql", path="/postgres").geturl()
    samples: collections.Counter = collections.Counter()
    statements: collections.Counter = collections.Counter()
    taken = 0
    with psycopg.connect(admin, autocommit=True) as connection:
        deadline = time.monotonic() + options.seconds
        while time.monotonic() < deadline:
            rows = connection.execute(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'running'), left(query, 60) "
                "FROM pg_stat_activity WHERE datname LIKE %s AND state = 'active' AND pid <> pg_backend_pid()",
                ["%" + options.database],
            ).fetchall()
            if rows:
                taken += 1
            for state, query in rows:
                samples[state] += 1
                if state != "running":
                    statements[(state, " ".join(query.split()))] += 1
            time.sleep(options.interval)
    total = sum(samples.values())
    print(f"{taken} samples with active sessions, {total} session-samples")
    for state, count in samples.most_common(10):
        print(f"  {count / max(total, 1):6.1%}  {state}")
    print("waiting, by statement:")
    for (state, query), count in statements.most_common(8):
        print(f"  {count / max(total, 1):6.1%}  {state:<28} {query}")


if __name__ == "__main__":
    main()
