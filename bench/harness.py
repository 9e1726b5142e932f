"""The benchmark's machinery, shared by `python -m bench` and `python -m bench.growth`:
the servers (the baseline app and `consent-api serve` on one seeded database), wrk runs with
the serving process's peak RSS and CPU and PostgreSQL's CPU, the audience stream, and the
interleaved rounds whose medians are reported."""

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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import wrk
from bench.seed import SECRET, Seeded
from bench.wrk import Case

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@contextlib.contextmanager
def servers(
    args: argparse.Namespace, seeded: Seeded, data_dir: Path
) -> Iterator[tuple[dict[str, int], dict[str, subprocess.Popen[bytes]]]]:
    """The baseline app and consent-api on the seeded database, same workers and pool;
    (ports, processes) by target, stopped on the way out."""
    app_root = Path(args.app_root).resolve()
    env = _env(seeded, data_dir, args.pool, app_root)
    ports = {"baseline": free_port(), "consent": free_port()}
    workers = ["--workers", str(args.workers)]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["baseline"] = start(
            [
                *(sys.executable, "-m", "uvicorn", "bench.baseline_app:app"),
                *("--port", str(ports["baseline"]), "--no-access-log", "--log-level", "warning"),
                *workers,
            ],
            env,
            f"http://127.0.0.1:{ports['baseline']}/const",
        )
        procs["consent"] = start(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(ports["consent"]), *workers],
            env,
            f"http://127.0.0.1:{ports['consent']}/readyz",
            cwd=app_root,
        )
        yield ports, procs
    finally:
        for proc in procs.values():
            stop(proc)


def run_rounds(
    args: argparse.Namespace, all_cases: list[Case], seeded: Seeded, data_dir: Path
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every case (and the audience stream) once per round, interleaved over the rounds;
    (the results by case with their medians, the audience stream's runs)."""
    sample = random.sample(seeded.subject_ids, min(20000, len(seeded.subject_ids)))
    scripts = {c.name: wrk.script(c, sample, seeded.api_key) for c in all_cases}
    rounds: dict[str, list[dict[str, Any]]] = {c.name: [] for c in all_cases}
    audience: list[dict[str, Any]] = []
    with servers(args, seeded, data_dir) as (ports, procs):
        for n in range(args.rounds):
            for case in all_cases:
                base = f"http://127.0.0.1:{ports[case.target]}"
                r = measure(case, base, procs[case.target].pid, scripts[case.name], args)
                rounds[case.name].append(r)
                print(f"round {n + 1}/{args.rounds} {case.name:<32} {r}", flush=True)
            base = f"http://127.0.0.1:{ports['consent']}"
            audience.append(stream_audience(base, seeded.api_key, procs["consent"].pid))
            print(f"round {n + 1}/{args.rounds} audience stream {audience[-1]}", flush=True)
    results = {
        c.name: {
            **median_of(rounds[c.name]),
            "target": c.target,
            "versus": c.versus,
            "same_sql": c.same_sql,
            "per_request": c.per_request,
            "rounds": rounds[c.name],
        }
        for c in all_cases
    }
    return results, audience
