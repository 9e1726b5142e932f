"""Load benchmark: starts `consent-api serve` on a fresh embedded PostgreSQL, seeds subjects,
then drives endpoints with concurrent httpx clients and prints throughput and latency, each
as a ratio against baselines measured in the same run (GET /healthz: no database; GET
/readyz: one connection and `SELECT 1`).

    python bench/run.py [--seconds 10] [--concurrency 32] [--subjects 2000] [--workers 1]
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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

WRK_SCRIPT = """
local ids = {%s}
local bodies = {%s}
local n = 0
init = function(args)
  -- each wrk thread has its own Lua state: seed each differently
  math.randomseed(os.time() + tonumber(string.sub(tostring({}), 8)))
end
request = function()
  n = n + 1
  local unique = n .. "-" .. math.random(1000000000)
  local body = bodies[math.random(#bodies)]:gsub("SUBJECT", ids[math.random(#ids)])
  body = body:gsub("UNIQUE", unique)
  return wrk.format(%s, %s, {["Content-Type"]="application/json",
                     ["Authorization"]="Bearer %s"}, body)
end
"""


def _to_ms(value: str) -> float:
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    raise ValueError(value)


def drive_wrk(
    base: str, scenario: "Scenario", ids: list[str], key: str, seconds: float, concurrency: int
) -> dict[str, float]:
    """The same measurement with wrk (C, 2 threads): a load generator that is not the
    bottleneck. Latency percentiles come from wrk's own report."""
    script = WRK_SCRIPT % (
        ",".join(json.dumps(x) for x in ids),
        ",".join(json.dumps(b) for b in scenario.bodies or [""]),
        json.dumps(scenario.method),
        json.dumps(scenario.path),
        key,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", f.name, base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line.strip() for line in out.splitlines()]
    pick = lambda label: next(line.split()[1] for line in lines if line.startswith(label))  # noqa: E731
    errors = sum(int(line.split()[-1]) for line in lines if line.startswith("Non-2xx"))
    return {
        "rps": float(pick("Requests/sec")),
        "p50_ms": _to_ms(pick("50%")),
        "p99_ms": _to_ms(pick("99%")),
        "errors": errors,
        "n": 0,
    }


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


@dataclass
class Scenario:
    name: str
    method: str
    path: str
    # Body templates: SUBJECT becomes a random seeded subject id, UNIQUE a fresh token.
    bodies: list[str] = field(default_factory=list)


def scenarios(ids: list[str]) -> list[Scenario]:
    notice = "Tick to receive white papers from JI Group."
    consent = [
        json.dumps(
            {
                "subject_id": "SUBJECT",
                "purpose": "content_subscriptions",
                "action": action,
                "method": "web_form",
                "policy_version": "1",
                "notice_text": notice,
            }
        )
        for action in ("given", "withdrawn")
    ]
    batches = [
        json.dumps({"subjects": random.sample(ids, 100), "purpose": "email_campaigns"})
        for _ in range(20)
    ]
    return [
        Scenario(
            "POST /v1/decisions",
            "POST",
            "/v1/decisions",
            [json.dumps({"subject_id": "SUBJECT", "purpose": "email_campaigns"})],
        ),
        Scenario("POST decisions/batch100", "POST", "/v1/decisions/batch", batches),
        Scenario("POST /v1/consent-events", "POST", "/v1/consent-events", consent),
        Scenario(
            "POST /v1/subjects",
            "POST",
            "/v1/subjects",
            [
                json.dumps(
                    {"email": "w-UNIQUE@example.com", "category": "prospect", "source": "event"}
                )
            ],
        ),
    ]


def as_request(scenario: Scenario, ids: list[str], key: str) -> Request:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def request(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        body = random.choice(scenario.bodies or [""]).replace("SUBJECT", random.choice(ids))
        body = body.replace("UNIQUE", uuid.uuid4().hex)
        return client.request(scenario.method, scenario.path, content=body or None, headers=headers)

    return request


async def main(args: argparse.Namespace) -> None:
    use_wrk = args.driver == "wrk" or (args.driver == "auto" and shutil.which("wrk"))
    print(
        f"load generator: {'wrk' if use_wrk else 'httpx (Python, same machine)'}, "
        f"{args.concurrency} connections, {args.seconds:.0f} s each, {args.workers} worker(s)"
    )
    data_dir = tempfile.mkdtemp(prefix="consent-bench-")
    port = free_port()
    proc = start(data_dir, port, args.workers)
    base = f"http://127.0.0.1:{port}"
    try:
        key = create_key(data_dir, "crm")
        ids = await seed(base, key, args.subjects)

        async def measure(scenario: Scenario) -> dict[str, float]:
            if use_wrk:
                return await asyncio.to_thread(
                    drive_wrk, base, scenario, ids, key, args.seconds, args.concurrency
                )
            return await drive(base, as_request(scenario, ids, key), args.seconds, args.concurrency)

        baselines = {
            "healthz": await measure(Scenario("healthz", "GET", "/healthz")),
            "readyz": await measure(Scenario("readyz", "GET", "/readyz")),
        }
        for name, result in baselines.items():
            print(
                f"{'baseline ' + name:<24} {result['rps']:8.0f} req/s  p50 "
                f"{result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms"
            )
        for scenario in scenarios(ids):
            report(scenario.name, await measure(scenario), baselines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--driver", choices=["auto", "wrk", "httpx"], default="auto")
    asyncio.run(main(parser.parse_args()))
