"""`python -m bench`: consent-api against a bare FastAPI + asyncpg baseline, in one run.

One fresh embedded PostgreSQL under /tmp (deleted afterwards), seeded with 100,000
subjects (bench/seed.py). Two servers with the same worker count and pool size on it: the
baseline (bench/baseline_app.py) and `consent-api serve`. wrk drives every case at 32
connections: a warm-up, then the measured run; the cases are interleaved over 3 rounds and
the medians reported, each with its ratio to the baseline case it is compared with, peak
RSS of the serving process(es), and the issue 9 targets met or missed. JSON goes to --json.

    python -m bench                  # the full run (about 6 minutes on 2 cores)
    python -m bench --quick          # a smoke run: 1 round, short cases, 20,000 subjects
    python -m bench --profile decisions   # pyinstrument profile of consent-api under one case
"""

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import wrk
from bench.seed import SECRET, Seeded, seed, start_server
from bench.wrk import Case

ROOT = Path(__file__).resolve().parents[1]
PURPOSES = ("email_campaigns", "content_subscriptions")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cases(ids: list[str]) -> list[Case]:
    decision = [json.dumps({"subject_id": "SUBJECT", "purpose": p}) for p in PURPOSES]
    event = [
        json.dumps(
            {
                "subject_id": "SUBJECT",
                "purpose": "content_subscriptions",
                "action": action,
                "method": "web_form",
                "policy_version": "1",
                "notice_text": "Send me white papers.",
                "evidence": {"form_id": "bench", "page_url": "https://example.com/papers"},
            }
        )
        for action in ("given", "withdrawn")
    ]
    batches = [
        json.dumps({"subjects": random.sample(ids, 1000), "purpose": "email_campaigns"})
        for _ in range(8)
    ]
    return [
        Case("baseline GET constant", "baseline", "GET", "/const"),
        Case("baseline SELECT by key", "baseline", "GET", "/items/SUBJECT"),
        Case("baseline INSERT", "baseline", "POST", "/items", event),
        Case("GET /healthz", "consent", "GET", "/healthz", versus="baseline GET constant"),
        Case(
            "POST /v1/decisions",
            "consent",
            "POST",
            "/v1/decisions",
            decision,
            versus="baseline SELECT by key",
        ),
        Case(
            "GET /v1/subjects/{id}",
            "consent",
            "GET",
            "/v1/subjects/SUBJECT",
            versus="baseline SELECT by key",
        ),
        Case(
            "POST /v1/consent-events",
            "consent",
            "POST",
            "/v1/consent-events",
            event,
            versus="baseline INSERT",
        ),
        Case(
            "POST /v1/decisions/batch x1000",
            "consent",
            "POST",
            "/v1/decisions/batch",
            batches,
            per_request=1000,
        ),
    ]


def _env(seeded: Seeded, data_dir: Path, pool: int, app_root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_DATABASE_URL=seeded.url,
        CONSENT_DATA_DIR=str(data_dir),
        CONSENT_SECRET_KEY=SECRET,
        CONSENT_LOG_LEVEL="WARNING",
        CONSENT_DB_POOL_SIZE=str(pool),
        BENCH_PG=json.dumps(seeded.connect),
        BENCH_POOL_SIZE=str(pool),
        PYTHONPATH=os.pathsep.join(dict.fromkeys([str(app_root), str(ROOT)])),
    )
    return env


def start(
    cmd: list[str], env: dict[str, str], ready_url: str, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            sys.exit(f"bench: server exited during start-up:\n{err}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("bench: server did not start within 120 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


class PeakRss:
    """Samples the server and its worker processes every 100 ms while a case runs, and
    counts the CPU seconds they spent (steadier than req/s on a shared machine)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        root = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, *(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            self._stop.wait(0.1)

    def _cpu(self) -> float:
        root = psutil.Process(self.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total

    def __enter__(self) -> "PeakRss":
        self._cpu_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_seconds = self._cpu() - self._cpu_start


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its children (PostgreSQL: the postmaster,
    its backends, WAL writer, checkpointer...)."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def measure(case: Case, base: str, pid: int, lua: str, args: argparse.Namespace) -> dict[str, Any]:
    wrk.run(base, lua, args.warmup, args.connections)
    pg_before = process_tree_cpu(args.postmaster) if args.postmaster else 0.0
    with PeakRss(pid) as rss:
        result = wrk.run(base, lua, args.seconds, args.connections)
    pg_seconds = process_tree_cpu(args.postmaster) - pg_before if args.postmaster else 0.0
    result["peak_rss_mb"] = round(rss.peak / 2**20, 1)
    requests = max(1.0, result["rps"] * args.seconds)
    result["cpu_ms_per_request"] = round(rss.cpu_seconds * 1000 / requests, 3)
    result["pg_cpu_ms_per_request"] = round(pg_seconds * 1000 / requests, 3)
    return result


AUDIENCE_PURPOSE = "day_to_day_communications"  # every seeded subject is allowed (seed.py)


def stream_audience(base: str, api_key: str, pid: int) -> dict[str, Any]:
    """The whole audience as NDJSON, once: rows per second and the worker's peak RSS (each
    row handed out is also a stored, audited decision)."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/x-ndjson"}
    rows = 0
    with PeakRss(pid) as rss:
        started = time.monotonic()
        with httpx.stream(
            "GET", f"{base}/v1/audiences/{AUDIENCE_PURPOSE}", headers=headers, timeout=600
        ) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                rows += bool(line)
        seconds = time.monotonic() - started
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(rss.peak / 2**20, 1),
    }


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def targets(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool, str]]:
    def ratio(name: str, key: str = "rps") -> float:
        r = results[name]
        return float(r[key] / results[r["versus"]][key])

    batch = results["POST /v1/decisions/batch x1000"]
    rss = max(r["peak_rss_mb"] for r in results.values() if r["target"] == "consent")
    checks = [
        ("decisions >= 0.6x SELECT req/s", ratio("POST /v1/decisions") >= 0.6),
        ("decisions p99 <= 2x SELECT p99", ratio("POST /v1/decisions", "p99_ms") <= 2),
        ("batch >= 50,000 decisions/s", batch["rps"] * 1000 >= 50_000),
        ("consent-events >= 0.5x INSERT req/s", ratio("POST /v1/consent-events") >= 0.5),
        ("GET subject >= 0.7x SELECT req/s", ratio("GET /v1/subjects/{id}") >= 0.7),
        ("peak RSS of a serving worker <= 150 MB", rss <= 150),
    ]
    detail = {
        "decisions >= 0.6x SELECT req/s": f"{ratio('POST /v1/decisions'):.2f}x",
        "decisions p99 <= 2x SELECT p99": f"{ratio('POST /v1/decisions', 'p99_ms'):.2f}x",
        "batch >= 50,000 decisions/s": f"{batch['rps'] * 1000:,.0f}/s",
        "consent-events >= 0.5x INSERT req/s": f"{ratio('POST /v1/consent-events'):.2f}x",
        "GET subject >= 0.7x SELECT req/s": f"{ratio('GET /v1/subjects/{id}'):.2f}x",
        "peak RSS of a serving worker <= 150 MB": f"{rss:.0f} MB",
    }
    return [(name, ok, detail[name]) for name, ok in checks]


def print_table(results: dict[str, dict[str, Any]]) -> None:
    head = (
        f"{'case':<32}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'RSS MB':>8}"
        f"{'CPU ms':>8}{'PG ms':>7}{'x base':>8}{'p99 x':>7}  vs"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        base = results.get(r["versus"] or "")
        ratio = f"{r['rps'] / base['rps']:.2f}" if base else "-"
        p99 = f"{r['p99_ms'] / base['p99_ms']:.2f}" if base else "-"
        extra = r["versus"] or ""
        if r["per_request"] > 1:
            extra = f"{r['rps'] * r['per_request']:,.0f} decisions/s"
        print(
            f"{name:<32}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{int(r['errors']):>8}{r['peak_rss_mb']:>8.0f}{r['cpu_ms_per_request']:>8.3f}"
            f"{r['pg_cpu_ms_per_request']:>7.3f}{ratio:>8}{p99:>7}  {extra}"
        )


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short cases")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per case")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pool", type=int, default=10, help="database pool size per worker")
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--json", default="bench-results.json", help="where to write results")
    parser.add_argument("--profile", choices=["decisions", "batch", "events", "subject"])
    parser.add_argument("--profile-out", default="bench-profile.txt")
    parser.add_argument(
        "--app-root",
        default=str(ROOT),
        help="checkout whose consent-api is served (e.g. an older commit, for before/after)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 3.0, 1.0
        args.subjects = min(args.subjects, 20_000)
    wrk.ensure_wrk()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="consent-bench-"))
    print(f"bench: PostgreSQL in {tmp}; seeding {args.subjects:,} subjects", flush=True)
    _server, admin_url = start_server(tmp)
    seeded = seed(admin_url, args.subjects, Path(args.app_root).resolve())
    args.postmaster = postmaster_pid(tmp / "pg")
    print(f"bench: seeded in {time.monotonic() - started:.0f} s", flush=True)
    if args.profile:
        profile(args, seeded, tmp / "data")
        return
    app_root = Path(args.app_root).resolve()
    env = _env(seeded, tmp / "data", args.pool, app_root)
    ports = {"baseline": free_port(), "consent": free_port()}
    workers = ["--workers", str(args.workers)]
    procs = {
        "baseline": start(
            [
                *(sys.executable, "-m", "uvicorn", "bench.baseline_app:app"),
                *("--port", str(ports["baseline"]), "--no-access-log", "--log-level", "warning"),
                *workers,
            ],
            env,
            f"http://127.0.0.1:{ports['baseline']}/const",
        ),
        "consent": start(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(ports["consent"]), *workers],
            env,
            f"http://127.0.0.1:{ports['consent']}/readyz",
            cwd=app_root,
        ),
    }
    all_cases = cases(seeded.subject_ids)
    sample = random.sample(seeded.subject_ids, min(20000, len(seeded.subject_ids)))
    scripts = {c.name: wrk.script(c, sample, seeded.api_key) for c in all_cases}
    rounds: dict[str, list[dict[str, Any]]] = {c.name: [] for c in all_cases}
    audience: list[dict[str, Any]] = []
    try:
        for n in range(args.rounds):
            for case in all_cases:
                base = f"http://127.0.0.1:{ports[case.target]}"
                r = measure(case, base, procs[case.target].pid, scripts[case.name], args)
                rounds[case.name].append(r)
                print(f"round {n + 1}/{args.rounds} {case.name:<32} {r}", flush=True)
            base = f"http://127.0.0.1:{ports['consent']}"
            audience.append(stream_audience(base, seeded.api_key, procs["consent"].pid))
            print(f"round {n + 1}/{args.rounds} audience stream {audience[-1]}", flush=True)
    finally:
        for proc in procs.values():
            stop(proc)
    results = {
        c.name: {
            **median_of(rounds[c.name]),
            "target": c.target,
            "versus": c.versus,
            "per_request": c.per_request,
            "rounds": rounds[c.name],
        }
        for c in all_cases
    }
    print(
        f"\nmedians of {args.rounds} round(s), {args.seconds:.0f} s per case after "
        f"{args.warmup:.0f} s warm-up, wrk -t2 -c{args.connections}, {args.workers} worker(s), "
        f"pool {args.pool}, {args.subjects:,} subjects\n"
    )
    print_table(results)
    print(
        "CPU ms: the serving process's CPU per request; PG ms: PostgreSQL's (all its "
        "processes) per request; x base, p99 x: req/s and p99 against the case in `vs`"
    )
    streamed = median_of(audience)
    print(
        f"GET /v1/audiences/{AUDIENCE_PURPOSE} (NDJSON): {streamed['rows']:,.0f} rows in "
        f"{streamed['seconds']:.1f} s, {streamed['rows_per_s']:,.0f} rows/s, "
        f"peak RSS {streamed['peak_rss_mb']:.0f} MB"
    )
    checks = targets(results)
    checks.append(
        (
            "audience stream >= 100,000 rows/s",
            streamed["rows_per_s"] >= 100_000,
            f"{streamed['rows_per_s']:,.0f} rows/s",
        )
    )
    print()
    for name, ok, detail in checks:
        print(f"{'MET   ' if ok else 'MISSED'} {name}: {detail}")
    out = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "cpu_count": os.cpu_count(),
        "results": results,
        "audience_stream": {"median": streamed, "rounds": audience},
        "targets": [{"target": n, "met": ok, "measured": d} for n, ok, d in checks],
        "seconds_total": round(time.monotonic() - started),
    }
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.json}; whole run {out['seconds_total']} s")


if __name__ == "__main__":
    main()
