"""Double opt-in: from the API request to the mail handed to the SMTP server. Starts
`consent-api serve` (one worker, its background sender included) on a fresh embedded
PostgreSQL with CONSENT_SMTP_URL pointing at a local aiosmtpd server, then sends N
`confirm_by_email` consents one at a time and prints the median and p99 of the API answer
(which never waits for SMTP) and of request -> message received by the SMTP server (matched
by the Message-ID, which names the pending event).

    python -m bench.double_opt_in [--requests 1000]
"""

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import _env, free_port, start
from bench.one_click import _summary
from bench.seed import seed, start_server
from tests.smtp_server import SmtpServer

NOTICE = "Tick to receive white papers and blog posts."


def _body(sid: str) -> dict[str, object]:
    return {
        "subject_id": sid,
        "purpose": "content_subscriptions",
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": NOTICE,
        "confirm_by_email": True,
    }


async def _requests(base: str, key: str, ids: list[str]) -> tuple[dict[str, float], list[float]]:
    """When each request was sent (by pending id), and each answer's latency."""
    sent: dict[str, float] = {}
    answers: list[float] = []
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for sid in ids:
            t0 = time.monotonic()
            r = await client.post("/v1/consent-events", json=_body(sid), headers=auth)
            answers.append(time.monotonic() - t0)
            if r.status_code != 202:
                raise SystemExit(f"POST /v1/consent-events answered {r.status_code}: {r.text}")
            sent[r.json()["id"]] = t0
    return sent, answers


async def _delivered(smtp: SmtpServer, sent: dict[str, float], seconds: int) -> list[float]:
    for _ in range(seconds * 10):  # polled: the SMTP server runs in a thread of its own
        if len(smtp.inbox.messages) >= len(sent):
            break
        await asyncio.sleep(0.1)
    latencies = []
    for message, at in zip(smtp.inbox.messages, smtp.inbox.received_at, strict=True):
        ref = str(message["Message-ID"]).strip("<>").split("@")[0]
        latencies.append(at - sent[ref])
    if len(latencies) < len(sent):
        raise SystemExit(f"only {len(latencies)} of {len(sent)} mails arrived in {seconds} s")
    return latencies


async def run(requests: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-doi-"))
    _server, admin_url = start_server(data_dir)
    seeded = await asyncio.to_thread(seed, admin_url, requests)
    smtp = SmtpServer().start()
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    env = _env(seeded, data_dir / "app", 10)
    env["CONSENT_ENV"] = "development"
    env["CONSENT_SMTP_URL"] = smtp.url
    proc = start(cmd, env, f"http://127.0.0.1:{port}/readyz")
    try:
        ids = [str(i) for i in seeded.subject_ids[:requests]]
        sent, answers = await _requests(f"http://127.0.0.1:{port}", seeded.api_key, ids)
        delivered = await _delivered(smtp, sent, seconds=300)
        print(f"POST /v1/consent-events (202)   {_summary(answers)}  (n={len(answers)})")
        print(f"request -> mail at SMTP server  {_summary(delivered)}  (n={len(delivered)})")
    finally:
        proc.terminate()
        proc.wait(30)
        smtp.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    asyncio.run(run(parser.parse_args().requests))


if __name__ == "__main__":
    main()
