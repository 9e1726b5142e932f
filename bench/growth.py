"""`python -m bench.growth`: does the cost per decision stay flat as the data grows?

Two databases, one after the other, each on its own fresh embedded PostgreSQL: a small one
(`--small`, 100,000 subjects) and a large one (`--subjects`, 1,000,000, with `--decisions`,
10,000,000, stored decisions). Each is seeded as production fills one (bench/growth_seed.py:
the bulk import with bases and consents, then decisions through the gate's batch statement),
then the main benchmark's cases run on it (the same functions: bench.cases, bench.harness),
and EXPLAIN (ANALYZE, BUFFERS) of a single decision and an audience chunk is kept
(bench/explain.py). Printed: every figure of the large run next to the small one, the table
and index sizes, and how long the seeding took. JSON goes to --json.

    python -m bench.growth                        # 1M subjects, 10M decisions: an hour or more
    python -m bench.growth --quick --subjects 50000 --decisions 200000 --small 10000
"""

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import growth_seed, wrk
from bench.__main__ import parser, report
from bench.cases import BATCH, DECISIONS, EVENTS, SAME_DECISION, SAME_EVENT, SELECT, SUBJECT
from bench.cases import cases as all_cases
from bench.explain import plans
from bench.harness import postmaster_pid, run_rounds
from bench.seed import Seeded, api_key, connect_kwargs, create_database, start_server


def _seed(admin_url: str, subjects: int, decisions: int, tmp: Path, app_root: Path) -> dict:
    """The database seeded; {"seeded": Seeded, "seeding": seconds per step, "principal"}."""
    started = time.monotonic()
    url = create_database(admin_url, app_root)
    connect = connect_kwargs(url)
    imported = growth_seed.import_file(url, subjects, tmp, app_root)
    print(f"growth: imported {subjects:,} subjects: {imported['report']}", flush=True)
    key = asyncio.run(api_key(url))
    asyncio.run(growth_seed.baseline_tables(connect))
    principal, ids = asyncio.run(growth_seed.principal_and_ids(connect))
    stored = asyncio.run(growth_seed.store_decisions(connect, ids, decisions, principal))
    print(f"growth: stored {stored['decisions']:,} decisions in {stored['seconds']} s", flush=True)
    vacuum = asyncio.run(growth_seed.vacuum_analyze(connect))
    seeding = {
        "import": imported,
        "decisions": stored,
        "vacuum_analyze_seconds": vacuum,
        "seconds_total": round(time.monotonic() - started, 1),
    }
    return {"seeded": Seeded(url, connect, ids, key), "seeding": seeding, "principal": principal}


def run_scale(args: Any, subjects: int, decisions: int) -> dict[str, Any]:
    """One database of this size, seeded, explained and benchmarked; then deleted."""
    tmp = Path(tempfile.mkdtemp(prefix="consent-growth-"))
    print(f"\ngrowth: {subjects:,} subjects, {decisions:,} decisions, in {tmp}", flush=True)
    server, admin_url = start_server(tmp)
    try:
        s = _seed(admin_url, subjects, decisions, tmp, Path(args.app_root).resolve())
        seeded: Seeded = s["seeded"]
        table_sizes = asyncio.run(growth_seed.sizes(seeded.connect))
        explained = asyncio.run(plans(seeded.connect, s["principal"], seeded.subject_ids[0]))
        for name, plan in explained.items():
            print(f"growth: EXPLAIN {name}: {plan['summary']}", flush=True)
        args.postmaster = postmaster_pid(tmp / "pg")
        results, audience = run_rounds(args, all_cases(seeded.subject_ids), seeded, tmp / "data")
        reported = report(args, results, audience, subjects)
    finally:
        server.cleanup()
    return {
        "subjects": subjects,
        "decisions": decisions,
        "seeding": s["seeding"],
        "sizes": table_sizes,
        "explain": explained,
        **reported,
    }


# (label, case, field, higher is better): each figure compared between the two sizes.
FIGURES = [
    ("decisions req/s", DECISIONS, "rps", True),
    ("decisions p99 ms", DECISIONS, "p99_ms", False),
    ("decisions PG ms each", DECISIONS, "pg_cpu_ms_per_request", False),
    ("consent events req/s", EVENTS, "rps", True),
    ("consent events PG ms each", EVENTS, "pg_cpu_ms_per_request", False),
    ("subject read req/s", SUBJECT, "rps", True),
    ("batch x1000 req/s", BATCH, "rps", True),
    ("same-SQL decision req/s", SAME_DECISION, "rps", True),
    ("same-SQL consent event req/s", SAME_EVENT, "rps", True),
    ("baseline SELECT req/s", SELECT, "rps", True),
]


def _figures(run: dict[str, Any]) -> dict[str, float]:
    out = {label: run["results"][case][key] for label, case, key, _ in FIGURES}
    out["audience rows/s"] = run["audience_stream"]["median"]["rows_per_s"]
    return out


def compare(small: dict[str, Any], large: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure at both sizes, the large one's change, and whether it is within 15%."""
    better = {label: up for label, _, _, up in FIGURES} | {"audience rows/s": True}
    a, b = _figures(small), _figures(large)
    head = f"{'figure':<30}{small['subjects']:>12,}{large['subjects']:>12,}{'change':>9}  flat"
    print(f"\n{head}\n{'-' * len(head)}")
    rows = []
    for label, before in a.items():
        after = b[label]
        change = after / before - 1 if before else 0.0
        flat = change >= -0.15 if better[label] else change <= 0.15
        mark = "yes" if flat else "NO"
        print(f"{label:<30}{before:>12,.2f}{after:>12,.2f}{change:>+9.0%}  {mark}")
        rows.append({"figure": label, "small": before, "large": after, "flat": flat})
    p99 = large["results"][DECISIONS]["p99_ms"] / large["results"][SELECT]["p99_ms"]
    print(f"decision p99 at {large['subjects']:,} subjects: {p99:.2f}x the SELECT's (target 2x)")
    return rows


def print_sizes(run: dict[str, Any]) -> None:
    print(f"\ntables at {run['subjects']:,} subjects ({run['decisions']:,} decisions seeded):")
    for t in run["sizes"]:
        print(
            f"  {t['table']:<28}{t['rows']:>12,} rows {t['total_bytes'] / 2**20:>9.1f} MB"
            f" (indexes {t['index_bytes'] / 2**20:.1f} MB)"
        )
    seeding = run["seeding"]
    print(
        f"  seeding: import {seeding['import']['seconds']} s, decisions"
        f" {seeding['decisions']['seconds']} s, VACUUM ANALYZE"
        f" {seeding['vacuum_analyze_seconds']} s; {seeding['seconds_total']} s in all"
    )


def main() -> None:
    p = parser("python -m bench.growth", __doc__)
    p.add_argument("--subjects", type=int, default=1_000_000)
    p.add_argument("--decisions", type=int, default=10_000_000)
    p.add_argument("--small", type=int, default=100_000, help="subjects of the small run")
    p.add_argument(
        "--small-decisions", type=int, default=0,
        help="decisions seeded in the small run (default 0: as the main benchmark's run)",
    )  # fmt: skip
    p.add_argument("--json", default="bench-growth.json", help="where to write results")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 3.0, 1.0
    wrk.ensure_wrk()
    started = time.monotonic()
    small = run_scale(args, args.small, args.small_decisions)
    large = run_scale(args, args.subjects, args.decisions)
    print_sizes(small)
    print_sizes(large)
    out = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "postmaster")},
        "cpu_count": os.cpu_count(),
        "comparison": compare(small, large),
        "small": small,
        "large": large,
        "seconds_total": round(time.monotonic() - started),
    }
    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {args.json}; whole run {out['seconds_total']} s")


if __name__ == "__main__":
    main()
