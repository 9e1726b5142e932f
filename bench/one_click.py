"""One-click unsubscribe latency (RFC 8058 asks for a quick 200): starts `consent-api serve`
on a fresh embedded PostgreSQL, makes links for N subjects, then POSTs the exact RFC 8058
body to each link once (a new opt-out) and again (a repeat), one request at a time, and
prints median and p99 latency beside GET /healthz measured in the same run.

    python -m bench.one_click [--subjects 300]
"""

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import _env, free_port, start
from bench.seed import seed, start_server

BODY = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


async def _timed(client: httpx.AsyncClient, method: str, url: str, **kw: object) -> float:
    t0 = time.perf_counter()
    r = await client.request(method, url, **kw)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"{method} {url[:40]}... answered {r.status_code}")
    return elapsed


async def run(subjects: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-one-click-"))
    _server, admin_url = start_server(data_dir)
    seeded = await asyncio.to_thread(seed, admin_url, 0)  # migrated, a crm key, no subjects
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    env = _env(seeded, data_dir / "app", 10)
    env["CONSENT_ENV"] = "development"  # http:// links to this server are fine here
    proc = start(cmd, env, f"http://127.0.0.1:{port}/readyz")
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {seeded.api_key}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            paths = []
            for i in range(subjects):
                body = {
                    "email": f"bench-{i}@example.com",
                    "category": "prospect",
                    "source": "enquiry",
                }
                sid = (await client.post("/v1/subjects", json=body, headers=auth)).json()["id"]
                links = (await client.post(f"/v1/subjects/{sid}/links", headers=auth)).json()
                # The link names CONSENT_PUBLIC_BASE_URL; this server has its own port.
                paths.append("/" + links["unsubscribe_url"].split("/", 3)[3])
            health = [await _timed(client, "GET", "/healthz") for _ in range(subjects)]
            first = [await _timed(client, "POST", p, content=BODY, headers=FORM) for p in paths]
            again = [await _timed(client, "POST", p, content=BODY, headers=FORM) for p in paths]
        print(f"GET /healthz            {_summary(health)}  (n={subjects})")
        print(f"POST /u/{{token}} new    {_summary(first)}  (n={subjects})")
        print(f"POST /u/{{token}} repeat {_summary(again)}  (n={subjects})")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=300)
    asyncio.run(run(parser.parse_args().subjects))


if __name__ == "__main__":
    main()
