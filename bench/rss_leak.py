"""Leak check (issue 14): the worker's resident memory after 50,000 requests is within 10%
of that after 1,000. `python -m bench.rss_leak [--requests 50000]`.

Starts `consent-api serve` (one worker, its own embedded PostgreSQL in a temporary data
directory), warms it with 1,000 requests of a realistic mix (decisions, catalogue reads,
consent events, a 404, a bad key), measures RSS, sends the rest, measures again."""

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import httpx
import psutil

MIX = 20  # concurrent clients
ERRORS: dict[str, int] = {}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_DATA_DIR=data_dir, CONSENT_LOG_LEVEL="WARNING")
    return env


async def _drive(base: str, key: str, subject_id: str, count: int) -> None:
    crm = {"Authorization": f"Bearer {key}"}
    sent = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        try:
            await _request(client, i)
        except httpx.TransportError as exc:  # counted and reported, never hidden
            ERRORS[type(exc).__name__] = ERRORS.get(type(exc).__name__, 0) + 1

    async def _request(client: httpx.AsyncClient, i: int) -> None:
        kind = i % 5
        if kind == 0:
            body = {"subject_id": subject_id, "purpose": "email_campaigns"}
            await client.post("/v1/decisions", headers=crm, json=body)
        elif kind == 1:
            await client.get("/v1/purposes", headers=crm)
        elif kind == 2:
            await client.get(f"/v1/subjects/{uuid.uuid4()}", headers=crm)
        elif kind == 3:
            await client.get("/v1/purposes", headers={"Authorization": "Bearer cak_wrong"})
        else:
            await client.get("/healthz")

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while sent < count:
            batch = min(MIX, count - sent)
            await asyncio.gather(*(one(client, sent + j) for j in range(batch)))
            sent += batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="consent-rss-")
    env = _env(data_dir)
    # A high failure allowance: the bad-key requests would otherwise be throttled (429).
    env["CONSENT_AUTH_FAILURES_ALLOWED"] = "1000000000"
    port = _free_port()
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True)
    key = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--role", "crm", "--name", "rss"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env, stdout=open(os.path.join(data_dir, "serve.log"), "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        crm = {"Authorization": f"Bearer {key}"}
        body = {"email": "rss@example.com", "category": "customer_contact", "source": "enquiry"}
        subject = httpx.post(base + "/v1/subjects", headers=crm, json=body).json()
        worker = psutil.Process(server.pid)
        asyncio.run(_drive(base, key, subject["id"], args.warmup))
        after_warmup = worker.memory_info().rss
        t0 = time.monotonic()
        asyncio.run(_drive(base, key, subject["id"], args.requests - args.warmup))
        after_all = worker.memory_info().rss
        growth = (after_all - after_warmup) / after_warmup * 100
        print(f"RSS after {args.warmup} requests: {after_warmup / 2**20:.1f} MiB")
        print(f"RSS after {args.requests} requests: {after_all / 2**20:.1f} MiB "
              f"({growth:+.1f}%, {time.monotonic() - t0:.0f} s)")  # fmt: skip
        print("within 10%" if abs(growth) <= 10 else "MORE THAN 10%: a leak?")
        print(f"transport errors: {ERRORS or 'none'}")
        if ERRORS:
            with open(os.path.join(data_dir, "serve.log"), errors="replace") as log:
                print("service log tail:", log.read()[-2000:])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
