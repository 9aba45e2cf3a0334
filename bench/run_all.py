"""`make bench`: every benchmark in turn, its output as it comes, then a summary of the figures
issue 20 sets targets for (the `figure  value  target  PASS|MISS` lines of bench.common.report).
Exits 1 when a figure MISSes or a bench fails to finish; `make bench` is not part of `make test`.

    .venv/bin/python bench/run_all.py [--quick] [--only http_bench many_trials_bench ...]

--quick runs each bench on fewer rows (a smoke run: its figures are not the targets' figures)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (script, its arguments for the real run, its arguments for --quick)
BENCHES = (
    ("randomize_inprocess_bench.py", [], ["--randomizations", "50", "--many", "200"]),
    ("http_bench.py", [], ["--participants", "400", "--runs", "1", "--page-participants", "2000"]),
    ("audit_chain_bench.py", [], ["--participants", "100", "--runs", "1", "--threads", "1"]),
    ("export_bench.py", [], ["--participants", "20000"]),
    ("many_trials_bench.py", [], ["--trials", "50"]),
    ("pages_bench.py", [], ["--screenings", "100", "--runs", "10"]),
    ("reminder_scan_bench.py", [], ["--visits", "20000", "--runs", "3"]),
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", help="script names (with or without .py)")
    options = parser.parse_args()

    figures: list[tuple[str, str]] = []
    failed: list[str] = []
    for script, arguments, quick in BENCHES:
        if options.only and script.removesuffix(".py") not in {name.removesuffix(".py") for name in options.only}:
            continue
        path = ROOT / "bench" / script
        if not path.exists():
            print(f"== {script}: not in this build, skipped", flush=True)
            continue
        command = [sys.executable, str(path), *(quick if options.quick else arguments)]
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1)
        for line in process.stdout:
            print(line, end="", flush=True)
            verdict = line.rstrip().rsplit(maxsplit=1)[-1] if line.strip() else ""
            if verdict in ("PASS", "MISS"):
                figures.append((script, line.rstrip()))
        process.wait()
        print(f"== {script}: exit {process.returncode} after {time.monotonic() - started:.0f} s", flush=True)
        if process.returncode != 0:
            failed.append(script)

    print("\n== summary" + (" (--quick: fewer rows than the targets speak of)" if options.quick else ""))
    for script, line in figures:
        print(f"{script.removesuffix('.py'):<26} {line.strip()}")
    misses = sum(1 for _script, line in figures if line.endswith("MISS"))
    print(
        f"{len(figures)} figures: {len(figures) - misses} PASS, {misses} MISS"
        + (f"; did not finish: {', '.join(failed)}" if failed else "")
    )
    return 1 if misses or failed else 0


if __name__ == "__main__":
    sys.exit(main())
