"""Load benchmark: starts `consent-api serve` on a fresh embedded PostgreSQL, seeds subjects,
then drives endpoints with concurrent httpx clients and prints throughput and latency, each
as a ratio against baselines measured in the same run (GET /healthz: no database; GET
/readyz: one connection and `SELECT 1`).

    python bench/run.py [--seconds 10] [--concurrency 32] [--subjects 2000] [--workers 1]
"""

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_DATA_DIR"] = data_dir
    env["CONSENT_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def create_key(data_dir: str, role: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_DATA_DIR"] = data_dir
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "keys",
            "create",
            "--role",
            role,
            "--name",
            f"bench-{uuid.uuid4().hex[:6]}",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


Request = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def drive(base: str, request: Request, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await request(client)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code >= 400

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
        "n": len(latencies),
    }


async def seed(base: str, key: str, n: int) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                r = await client.post(
                    "/v1/subjects",
                    json={
                        "email": f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com",
                        "name": "Bench",
                        "category": "customer_contact",
                        "source": "enquiry",
                    },
                )
                sid = r.json()["id"]
                await client.put(
                    f"/v1/subjects/{sid}/bases/email_campaigns",
                    json={"basis": "legitimate_interests", "lia_ref": "LIA-1"},
                )
                ids.append(sid)

        await asyncio.gather(*(one(i) for i in range(n)))
    return ids


def report(name: str, result: dict[str, float], baselines: dict[str, dict[str, float]]) -> None:
    ratios = "  ".join(
        f"rps/{b}={result['rps'] / v['rps']:.2f} p50/{b}={result['p50_ms'] / v['p50_ms']:.2f}"
        for b, v in baselines.items()
    )
    print(
        f"{name:<22} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
        f"p99 {result['p99_ms']:6.2f} ms  errors {int(result['errors'])}  {ratios}"
    )


async def main(args: argparse.Namespace) -> None:
    data_dir = tempfile.mkdtemp(prefix="consent-bench-")
    port = free_port()
    proc = start(data_dir, port, args.workers)
    base = f"http://127.0.0.1:{port}"
    try:
        crm = create_key(data_dir, "crm")
        auth = {"Authorization": f"Bearer {crm}"}
        ids = await seed(base, crm, args.subjects)
        run = lambda req: drive(base, req, args.seconds, args.concurrency)  # noqa: E731
        baselines = {
            "healthz": await run(lambda c: c.get("/healthz")),
            "readyz": await run(lambda c: c.get("/readyz")),
        }
        for name, result in baselines.items():
            print(
                f"{'baseline ' + name:<22} {result['rps']:8.0f} req/s  p50 "
                f"{result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms"
            )
        report(
            "POST /v1/decisions",
            await run(
                lambda c: c.post(
                    "/v1/decisions",
                    headers=auth,
                    json={"subject_id": random.choice(ids), "purpose": "email_campaigns"},
                )
            ),
            baselines,
        )
        report(
            "POST decisions/batch100",
            await run(
                lambda c: c.post(
                    "/v1/decisions/batch",
                    headers=auth,
                    json={"subjects": random.sample(ids, 100), "purpose": "email_campaigns"},
                )
            ),
            baselines,
        )
        notice = "Tick to receive white papers from JI Group."
        report(
            "POST /v1/consent-events",
            await run(
                lambda c: c.post(
                    "/v1/consent-events",
                    headers=auth,
                    json={
                        "subject_id": random.choice(ids),
                        "purpose": "content_subscriptions",
                        "action": random.choice(["given", "withdrawn"]),
                        "method": "web_form",
                        "policy_version": "1",
                        "notice_text": notice,
                    },
                )
            ),
            baselines,
        )
        report(
            "POST /v1/subjects",
            await run(
                lambda c: c.post(
                    "/v1/subjects",
                    headers=auth,
                    json={
                        "email": f"w-{uuid.uuid4().hex}@example.com",
                        "category": "prospect",
                        "source": "event",
                    },
                )
            ),
            baselines,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
