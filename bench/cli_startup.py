"""How fast does `dbkit --help` start?  Prints figures; never part of the test suite.

Baseline measured in the same run: a bare `python -c pass` and `python -c "import click"`.
`dbkit --help` imports no command module (dbkit.cli.LazyGroup); `dbkit migrate --help` imports one.
Target from the foundation issue: `dbkit --help` under 0.3 s on the project's machines.

    .venv/bin/python bench/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    dbkit = shutil.which("dbkit", path=os.path.dirname(sys.executable)) or "dbkit"
    cases = [
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
        ("python -c 'import click'", [sys.executable, "-c", "import click"]),
        ("dbkit --help", [dbkit, "--help"]),
        ("dbkit --version", [dbkit, "--version"]),
        ("dbkit migrate --help", [dbkit, "migrate", "--help"]),  # imports one command module (dbkit.cli._migrate)
    ]
    results = {}
    print(f"{'command':32} {'median s':>9} {'max s':>7} {'vs baseline':>11}")
    for label, cmd in cases:
        timed(cmd, 2)  # warm the page cache
        med, worst = timed(cmd, args.runs)
        results[label] = med
        base = results[cases[0][0]]
        print(f"{label:32} {med:9.3f} {worst:7.3f} {med / base:10.1f}x")
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS of the measured processes: {rss_kb / 1024:.1f} MiB")
    verdict = "OK" if results["dbkit --help"] < 0.3 else "OVER BUDGET"
    print(f"dbkit --help median {results['dbkit --help']:.3f} s vs budget 0.300 s: {verdict}")


if __name__ == "__main__":
    main()
