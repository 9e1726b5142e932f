"""Monthly partitions of decisions and audit_entries: months ahead, rows moved out of the
default partition, the chain verified across months, and the retention job that exports and
detaches a month only when it is sealed."""

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.core.signing import get_signer
from app.services.audit.chain import seal_pending, verify
from app.services.partitions import RetentionRefused, detach_month, ensure_partitions

ROOT = Path(__file__).resolve().parents[1]
OLD = date(2025, 2, 1)


async def _partitions(db, parent):
    rows = await db.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :p ORDER BY 1"
        ),
        {"p": parent},
    )
    return list(rows.scalars())


async def test_both_tables_have_a_default_and_months_ahead(db):
    this_month = datetime.now(UTC).date().replace(day=1)
    for parent in ("decisions", "audit_entries"):
        names = await _partitions(db, parent)
        assert f"{parent}_default" in names
        assert f"{parent}_{this_month:%Y_%m}" in names
        assert len([n for n in names if n != f"{parent}_default"]) >= 4  # this month + 3
    assert await ensure_partitions(db) == 0  # already there: nothing to create


async def test_rows_in_the_default_partition_move_into_their_new_month(db):
    await db.execute(
        text(
            "INSERT INTO audit_entries (at, actor_name, actor_role, action, entity, digest)"
            " VALUES ('2031-05-07T12:00:00Z', 'system', 'system', 'test', 'test', '{}')"
        )
    )
    where = "FROM audit_entries_default WHERE at >= '2031-05-01' AND at < '2031-06-01'"
    assert (await db.execute(text(f"SELECT count(*) {where}"))).scalar_one() == 1
    created = await db.execute(
        text("SELECT consent_ensure_month_partition('audit_entries', 'at', '2031-05-01')")
    )
    assert created.scalar_one() is True
    assert (await db.execute(text(f"SELECT count(*) {where}"))).scalar_one() == 0
    moved = await db.execute(text("SELECT action FROM audit_entries_2031_05"))
    assert moved.scalars().all() == ["test"]


@pytest.fixture
async def own_database(database_url):
    """A database of its own: these tests commit, seal and detach for real."""
    name = f"consent_part_{uuid.uuid4().hex[:10]}"
    await ensure_database(database_url, name)
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    return url


async def _entry(session, at: datetime, action: str) -> None:
    await session.execute(
        text(
            "INSERT INTO audit_entries (at, actor_name, actor_role, action, entity, digest)"
            " VALUES (CAST(:at AS timestamptz), 'system', 'system', :a, 'test', '{}')"
        ),
        {"at": at, "a": action},
    )
    await session.execute(
        text(
            "INSERT INTO decisions (id, decided_at, requester_name, requester_role, purpose,"
            " allowed, reasons) VALUES (gen_random_uuid(), CAST(:at AS timestamptz), 'crm',"
            " 'crm', 'surveys', false, ARRAY['subject_unknown'])"
        ),
        {"at": at},
    )


async def test_detach_refuses_an_unsealed_month_then_exports_and_verify_still_passes(
    own_database, test_settings, tmp_path
):
    signer = get_signer(test_settings)
    engine = create_engine(own_database, test_settings)
    maker = create_sessionmaker(engine)
    try:
        async with maker() as s:
            await s.execute(
                text("SELECT consent_ensure_month_partition(p, k, CAST(:m AS date))"
                     " FROM (VALUES ('decisions', 'decided_at'), ('audit_entries', 'at')) v(p, k)"),
                {"m": OLD},
            )  # fmt: skip
            for day in (3, 14, 27):
                await _entry(s, datetime(2025, 2, day, 10, tzinfo=UTC), f"old.{day}")
            await s.commit()

        # Unsealed: refused, nothing exported, still attached.
        async with maker() as s:
            with pytest.raises(RetentionRefused, match="unsealed"):
                await detach_month(s, OLD, tmp_path)
            await s.rollback()
        assert list(tmp_path.iterdir()) == []
        env = {**os.environ, "CONSENT_DATABASE_URL": own_database}
        cli = subprocess.run(  # noqa: ASYNC221
            [sys.executable, "-m", "app.cli", "partitions", "detach", "--before", "2025-03",
             "--export-dir", str(tmp_path)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode != 0
        assert "unsealed" in cli.stderr and "Traceback" not in cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1

        async with maker() as s:  # sealed across months: the old one, then this one's
            assert await seal_pending(s, signer) == 3
            for n in range(4):
                await _entry(s, datetime.now(UTC), f"new.{n}")
            await s.commit()
        async with maker() as s:
            await seal_pending(s, signer)
            result = await verify(s, signer)
            assert result.ok and result.checked == 7  # one chain over both months
            await s.commit()

        # A month not yet over is never detached.
        this_month = datetime.now(UTC).date().replace(day=1)
        async with maker() as s:
            with pytest.raises(RetentionRefused, match="before the current"):
                await detach_month(s, this_month, tmp_path)

        async with maker() as s:
            archived = await detach_month(s, OLD, tmp_path)
            await s.commit()
        assert [a["partition"] for a in archived] == ["audit_entries_2025_02", "decisions_2025_02"]
        async with maker() as s:
            names = await _partitions(s, "audit_entries") + await _partitions(s, "decisions")
            assert "audit_entries_2025_02" not in names and "decisions_2025_02" not in names
            recorded = (
                await s.execute(
                    text("SELECT partition, path, sha256, rows, first_position, last_position"
                         " FROM partition_archives ORDER BY partition")
                )
            ).all()  # fmt: skip
            assert [(r.partition, r.rows) for r in recorded] == [
                ("audit_entries_2025_02", 3), ("decisions_2025_02", 3),
            ]  # fmt: skip
            assert (recorded[0].first_position, recorded[0].last_position) == (1, 3)
            for r in recorded:  # the file is there, and is what was recorded
                data = Path(r.path).read_bytes()  # noqa: ASYNC240
                assert hashlib.sha256(data).hexdigest() == r.sha256
                assert len(data.decode().strip().splitlines()) == 1 + r.rows  # header + rows
            assert "old.14" in Path(recorded[0].path).read_text()  # noqa: ASYNC240

            # The retained chain still verifies, and still catches tampering.
            result = await verify(s, signer)
            assert result.ok and result.checked == 4, result
            await s.execute(text("UPDATE audit_entries SET action = 'forged' WHERE position = 5"))
            assert not (await verify(s, signer)).ok
            await s.rollback()
        async with maker() as s:  # a missing entry outside the archived range is caught
            await s.execute(text("DELETE FROM audit_entries WHERE position = 5"))
            bad = await verify(s, signer)
            assert not bad.ok and bad.problem == "an entry is missing"
            await s.rollback()

        # The archive is never overwritten: detaching again has nothing left to do.
        async with maker() as s:
            assert await detach_month(s, OLD, tmp_path) == []
    finally:
        await engine.dispose()
