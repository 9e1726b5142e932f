"""The privacy team's console at the benchmark's scale: starts `consent-api serve` on a fresh
embedded PostgreSQL seeded with N subjects (bench/seed.py) and R rights requests, then
GETs each main console page one request at a time with a crm key (the console accepts a
bearer key as the auditor pages do) and prints median and p99 latency per page beside
GET /healthz, against the 200 ms p99 target.

    python -m bench.console [--subjects 100000] [--requests 1000] [--samples 300]
"""

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import _env, free_port, start
from bench.seed import seed, start_server

TARGET_P99_MS = 200.0


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def _timed(client: httpx.AsyncClient, path: str) -> float:
    t0 = time.perf_counter()
    r = await client.get(path)
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"GET {path} answered {r.status_code}")
    return elapsed


async def _requests(client: httpx.AsyncClient, subject_ids: list[str], n: int) -> list[str]:
    """N rights requests for random subjects, identity verified for every other one."""
    made = []
    for i in range(n):
        body = {"type": random.choice(["access", "erasure", "object_marketing"]),
                "subject_id": random.choice(subject_ids)}  # fmt: skip
        r = await client.post("/v1/rights-requests", json=body)
        if r.status_code != 201:
            raise SystemExit(f"POST /v1/rights-requests answered {r.status_code}: {r.text}")
        rid = r.json()["id"]
        if i % 2:
            await client.post(
                f"/v1/rights-requests/{rid}/verify-identity", json={"method": "email"}
            )
        made.append(rid)
    return made


def _pages(subject_ids: list[str], request_ids: list[str], subjects: int) -> dict[str, list[str]]:
    pick = random.Random(7)
    return {
        "requests, due first": ["/console/"],
        "requests of one type": ["/console/?type=access"],
        "a request": [f"/console/requests/{r}" for r in request_ids],
        "search by e-mail": [
            f"/console/people?q=bench-{pick.randrange(subjects)}@example.com" for _ in range(50)
        ],
        "a person's record": [f"/console/people/{s}" for s in subject_ids[:2000]],
    }


async def measure(base: str, key: str, seeded_ids: list[str], args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        request_ids = await _requests(client, seeded_ids, args.requests)
        pages = _pages(seeded_ids, request_ids, args.subjects)
        health = [await _timed(client, "/healthz") for _ in range(args.samples)]
        print(f"{'GET /healthz':<26} median {_quantiles(health)[0]:7.2f} ms")
        for name, paths in pages.items():
            samples = [await _timed(client, random.choice(paths)) for _ in range(args.samples)]
            median, p99 = _quantiles(samples)
            verdict = "MET   " if p99 <= TARGET_P99_MS else "MISSED"
            print(f"{name:<26} median {median:7.2f} ms  p99 {p99:7.2f} ms  {verdict}")


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    _server, admin_url = start_server(data_dir)
    seeded = await asyncio.to_thread(seed, admin_url, args.subjects)
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    proc = start(cmd, _env(seeded, data_dir / "app", 10), f"http://127.0.0.1:{port}/readyz")
    try:
        print(f"{args.subjects:,} subjects, {args.requests:,} rights requests, "
              f"{args.samples} GETs per page, one at a time")  # fmt: skip
        await measure(f"http://127.0.0.1:{port}", seeded.api_key, seeded.subject_ids, args)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=100_000, help="subjects seeded")
    parser.add_argument("--requests", type=int, default=1000, help="rights requests made")
    parser.add_argument("--samples", type=int, default=300, help="GETs per page")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
