"""`python -m bench`: consent-api against a bare FastAPI + asyncpg baseline, in one run.

One fresh embedded PostgreSQL under /tmp (deleted afterwards), seeded with 100,000
subjects (bench/seed.py). Two servers with the same worker count and pool size on it: the
baseline (bench/baseline_app.py) and `consent-api serve`. wrk drives every case at 32
connections: a warm-up, then the measured run; the cases are interleaved over 3 rounds and
the medians reported, each with its ratio to the baseline case it is compared with (a bare
SELECT or INSERT, and for decisions and consent events also the baseline running the
service's own statement: "same-SQL"), peak RSS of the serving process(es), and the targets
met or missed. JSON goes to --json.

    python -m bench                  # the full run (about 7 minutes on 2 cores)
    python -m bench --quick          # a smoke run: 1 round, short cases, 20,000 subjects
    python -m bench --profile decisions   # pyinstrument profile of consent-api under one case
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import wrk
from bench.cases import cases, print_baseline, print_table, targets
from bench.harness import (
    AUDIENCE_PURPOSE,
    ROOT,
    _env,
    free_port,
    measure,
    median_of,
    postmaster_pid,
    run_rounds,
    start,
    stop,
)
from bench.seed import Seeded, seed, start_server


def profile(args: argparse.Namespace, seeded: Seeded, data_dir: Path) -> None:
    """consent-api under pyinstrument while wrk drives one case; prints the top lines."""
    by_key = {
        "decisions": "POST /v1/decisions",
        "batch": "POST /v1/decisions/batch x1000",
        "events": "POST /v1/consent-events",
        "subject": "GET /v1/subjects/{id}",
    }
    case = next(c for c in cases(seeded.subject_ids) if c.name == by_key[args.profile])
    port = free_port()
    out = Path(args.profile_out)
    cmd = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(out)]
    cmd += ["-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    app_root = Path(args.app_root).resolve()
    env = _env(seeded, data_dir, args.pool, app_root)
    proc = start(cmd, env, f"http://127.0.0.1:{port}/readyz", cwd=app_root)
    try:
        lua = wrk.script(case, seeded.subject_ids[:20000], seeded.api_key)
        result = measure(case, f"http://127.0.0.1:{port}", proc.pid, lua, args)
        print(f"{case.name} under the profiler: {result}")
    finally:
        stop(proc)
    print(f"profile written to {out}")
    print("\n".join(out.read_text().splitlines()[:60]))


def parser(prog: str = "python -m bench", doc: str = __doc__) -> argparse.ArgumentParser:
    """The options of a run of the cases (bench.growth adds its own)."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, short cases")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per case")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pool", type=int, default=10, help="database pool size per worker")
    p.add_argument(
        "--app-root",
        default=str(ROOT),
        help="checkout whose consent-api is served (e.g. an older commit, for before/after)",
    )
    return p


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    audience: list[dict[str, Any]],
    subjects: int,
) -> dict[str, Any]:
    """Prints the medians, the baseline's rates and the targets; returns them for the JSON."""
    print(
        f"\nmedians of {args.rounds} round(s), {args.seconds:.0f} s per case after "
        f"{args.warmup:.0f} s warm-up, wrk -t2 -c{args.connections}, {args.workers} worker(s), "
        f"pool {args.pool}, {subjects:,} subjects\n"
    )
    print_table(results)
    print(
        "CPU ms: the serving process's CPU per request; PG ms: PostgreSQL's (all its "
        "processes) per request; x base, p99 x: req/s and p99 against the case in `vs`; "
        "x same: req/s against the baseline running the same statement"
    )
    print_baseline(results)
    streamed = median_of(audience)
    print(
        f"GET /v1/audiences/{AUDIENCE_PURPOSE} (NDJSON): {streamed['rows']:,.0f} rows in "
        f"{streamed['seconds']:.1f} s, {streamed['rows_per_s']:,.0f} rows/s, "
        f"peak RSS {streamed['peak_rss_mb']:.0f} MB"
    )
    checks = targets(results)
    rows_per_s = streamed["rows_per_s"]
    checks.append(
        ("audience stream >= 100,000 rows/s", rows_per_s >= 100_000, f"{rows_per_s:,.0f} rows/s")
    )
    print()
    for name, ok, detail in checks:
        print(f"{'MET   ' if ok else 'MISSED'} {name}: {detail}")
    return {
        "results": results,
        "audience_stream": {"median": streamed, "rounds": audience},
        "targets": [{"target": n, "met": ok, "measured": d} for n, ok, d in checks],
    }


def apply_settings(admin_url: str, settings: list[str]) -> None:
    """ALTER SYSTEM each NAME=VALUE and reload (settings that need a restart are refused by
    PostgreSQL's answer to pg_reload_conf only in its log: use reloadable ones)."""
    import asyncio

    import asyncpg

    async def alter() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for item in settings:
                name, _, value = item.partition("=")
                if not name.replace("_", "").isalnum():
                    raise SystemExit(f"bench: not a setting name: {name!r}")
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
            await asyncio.sleep(1)  # the reload is a signal: let the server act on it
            shown = {i.partition("=")[0]: await conn.fetchval(f"SHOW {i.partition('=')[0]}")
                     for i in settings}  # fmt: skip
            print(f"bench: PostgreSQL settings {shown}", flush=True)
        finally:
            await conn.close()

    asyncio.run(alter())


def main() -> None:
    p = parser()
    p.add_argument("--subjects", type=int, default=100_000)
    p.add_argument("--json", default="bench-results.json", help="where to write results")
    p.add_argument("--profile", choices=["decisions", "batch", "events", "subject"])
    p.add_argument("--profile-out", default="bench-profile.txt")
    p.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the bench's server (ALTER SYSTEM, then a restart of its"
        " configuration), to measure its effect; repeatable",
    )
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 3.0, 1.0
        args.subjects = min(args.subjects, 20_000)
    wrk.ensure_wrk()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="consent-bench-"))
    print(f"bench: PostgreSQL in {tmp}; seeding {args.subjects:,} subjects", flush=True)
    _server, admin_url = start_server(tmp)
    if args.pg_setting:
        apply_settings(admin_url, args.pg_setting)
    seeded = seed(admin_url, args.subjects, Path(args.app_root).resolve())
    args.postmaster = postmaster_pid(tmp / "pg")
    print(f"bench: seeded in {time.monotonic() - started:.0f} s", flush=True)
    if args.profile:
        profile(args, seeded, tmp / "data")
        return
    results, audience = run_rounds(args, cases(seeded.subject_ids), seeded, tmp / "data")
    out = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "cpu_count": os.cpu_count(),
        **report(args, results, audience, args.subjects),
        "seconds_total": round(time.monotonic() - started),
    }
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.json}; whole run {out['seconds_total']} s")


if __name__ == "__main__":
    main()
