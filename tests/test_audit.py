"""The hash-chained audit log: sealing, verification, tamper detection, and writers that
never wait for each other."""

import asyncio
import uuid

import httpx
from sqlalchemy import text

from app.core.signing import get_signer
from app.main import create_app
from app.services.access import api_keys
from app.services.audit.chain import SEAL_LOCK, seal_pending, verify
from tests.conftest import new_subject


async def _write_some(client, crm, n=3):
    for _ in range(n):
        r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
        assert r.status_code == 201


async def test_verify_seals_pending_and_reports_ok(client, crm, auditor, db):
    await _write_some(client, crm)
    pending = (
        await db.execute(text("SELECT count(*) FROM audit_entries WHERE position IS NULL"))
    ).scalar()
    assert pending >= 3
    r = await client.get("/v1/audit/verify", headers=auditor)
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["first_bad"] is None and body["checked"] >= 3
    assert body["checkpoints_checked"] >= 1
    left = (
        await db.execute(text("SELECT count(*) FROM audit_entries WHERE position IS NULL"))
    ).scalar()
    assert left == 0
    events = (await client.get("/v1/audit/events", headers=auditor)).json()["items"]
    assert events and all(e["hash"] and e["position"] for e in events)
    checkpoints = (await client.get("/v1/audit/checkpoints", headers=auditor)).json()["items"]
    assert checkpoints[-1]["position"] == body["checked"]


async def _sealed(db, test_settings):
    signer = get_signer(test_settings)
    await seal_pending(db, signer)
    return signer


async def _last_position(db):
    return (await db.execute(text("SELECT max(position) FROM audit_entries"))).scalar()


async def test_editing_a_sealed_row_is_reported(client, crm, db, test_settings):
    await _write_some(client, crm)
    signer = await _sealed(db, test_settings)
    target = await _last_position(db) - 1
    await db.execute(
        text("UPDATE audit_entries SET action = 'subject.delete' WHERE position = :p"),
        {"p": target},
    )
    result = await verify(db, signer)
    assert result.ok is False and result.first_bad == target


async def test_deleting_a_sealed_row_is_reported(client, crm, db, test_settings):
    await _write_some(client, crm)
    signer = await _sealed(db, test_settings)
    target = await _last_position(db) - 1
    await db.execute(text("DELETE FROM audit_entries WHERE position = :p"), {"p": target})
    result = await verify(db, signer)
    assert result.ok is False and result.first_bad == target


async def test_deleting_the_tail_is_caught_by_the_signed_checkpoint(client, crm, db, test_settings):
    await _write_some(client, crm)
    signer = await _sealed(db, test_settings)
    last = await _last_position(db)
    await db.execute(text("DELETE FROM audit_entries WHERE position = :p"), {"p": last})
    result = await verify(db, signer)
    assert result.ok is False and result.first_bad == last


async def test_inserting_a_sealed_row_is_reported(client, crm, db, test_settings):
    await _write_some(client, crm)
    signer = await _sealed(db, test_settings)
    target = await _last_position(db) - 1
    # Make room and forge an entry in the middle, copying a neighbour's hashes.
    await db.execute(
        text("UPDATE audit_entries SET position = -position WHERE position >= :p"), {"p": target}
    )
    await db.execute(
        text(
            "UPDATE audit_entries SET position = -position + 1 WHERE position <= -CAST(:p AS bigint)"
        ),
        {"p": target},
    )
    await db.execute(
        text(
            "INSERT INTO audit_entries (actor_name, actor_role, action, entity, digest, position,"
            " prev_hash, hash) SELECT 'mallory', 'admin', 'subject.create', 'subject', '{}',"
            " CAST(:p AS bigint), prev_hash, hash FROM audit_entries WHERE position = CAST(:p AS bigint) + 1"
        ),
        {"p": target},
    )
    result = await verify(db, signer)
    assert result.ok is False and result.first_bad == target


async def test_a_checkpoint_with_a_bad_signature_is_reported(client, crm, db, test_settings):
    await _write_some(client, crm)
    signer = await _sealed(db, test_settings)
    cp = (
        await db.execute(
            text("SELECT position, signature FROM audit_checkpoints ORDER BY position DESC LIMIT 1")
        )
    ).one()
    head, payload, sig = cp.signature.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}"
    await db.execute(
        text("UPDATE audit_checkpoints SET signature = :s WHERE position = :p"),
        {"s": forged, "p": cp.position},
    )
    result = await verify(db, signer)
    assert result.ok is False and result.first_bad == cp.position


async def test_a_rewritten_chain_does_not_match_the_signed_checkpoints(
    client, crm, db, test_settings
):
    """Someone who can write to the database recomputes every hash after an edit; the
    checkpoints, signed with a key the database does not hold, still expose it."""
    from app.services.audit.chain import ENTRY_COLUMNS, chain_hash

    await _write_some(client, crm)
    signer = await _sealed(db, test_settings)
    target = await _last_position(db) - 1
    await db.execute(
        text("UPDATE audit_entries SET action = 'forged' WHERE position = :p"), {"p": target}
    )
    rows = (
        await db.execute(
            text(
                f"SELECT {ENTRY_COLUMNS}, position, prev_hash FROM audit_entries"
                " WHERE position >= :p ORDER BY position"
            ),
            {"p": target},
        )
    ).all()
    prev = rows[0].prev_hash
    for row in rows:
        h = chain_hash(prev, row, row.position)
        await db.execute(
            text("UPDATE audit_entries SET prev_hash = :pr, hash = :h WHERE id = :i"),
            {"pr": prev, "h": h, "i": row.id},
        )
        prev = h
    result = await verify(db, signer)
    assert result.ok is False
    assert result.problem == "a checkpoint does not match the chain or its signature"


async def test_200_concurrent_writers_never_wait_and_are_sealed_once(engine, test_settings):
    """Real commits. A transaction that has appended an entry and holds the sealer's lock
    stays open throughout: if writers waited on each other or on the sealer, they would
    never finish."""
    app = create_app(test_settings, engine=engine)
    async with app.state.sessionmaker() as session:
        key = await api_keys.create_key(session, name=f"load-{uuid.uuid4().hex[:8]}", role="crm")
        await session.commit()
    headers = {"Authorization": f"Bearer {key}"}
    async with engine.connect() as blocker:
        await blocker.begin()
        await blocker.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEAL_LOCK})
        await blocker.execute(
            text(
                "INSERT INTO audit_entries (actor_name, actor_role, action, entity, digest)"
                " VALUES ('blocker', 'system', 'test.block', 'test', '{}')"
            )
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            bodies = [new_subject() for _ in range(200)]
            responses = await asyncio.wait_for(
                asyncio.gather(
                    *(client.post("/v1/subjects", json=b, headers=headers) for b in bodies)
                ),
                timeout=120,
            )
        assert [r.status_code for r in responses] == [201] * 200
        await blocker.commit()
    ids = [r.json()["id"] for r in responses]
    async with app.state.sessionmaker() as session:
        result = await verify(session, get_signer(test_settings))
        await session.commit()
        assert result.ok, result
        rows = (
            await session.execute(
                text("SELECT position FROM audit_entries WHERE entity_id = ANY(:ids)"), {"ids": ids}
            )
        ).all()
        assert len(rows) == 200 and all(r.position is not None for r in rows)
        assert len({r.position for r in rows}) == 200
        dupes = (
            await session.execute(
                text("SELECT count(*) - count(DISTINCT position) FROM audit_entries")
            )
        ).scalar()
        assert dupes == 0


async def test_two_sealers_never_seal_twice(engine, test_settings):
    app = create_app(test_settings, engine=engine)
    async with app.state.sessionmaker() as s:
        for _ in range(50):
            await s.execute(
                text(
                    "INSERT INTO audit_entries (actor_name, actor_role, action, entity,"
                    " digest) VALUES ('t', 'system', 'test.parallel', 'test', '{}')"
                )
            )
        await s.commit()
    signer = get_signer(test_settings)

    async def seal() -> int:
        async with app.state.sessionmaker() as s:
            n = await seal_pending(s, signer)
            await s.commit()
            return n

    counts = await asyncio.gather(*(seal() for _ in range(4)))
    assert sum(counts) >= 50
    async with app.state.sessionmaker() as s:
        assert (await verify(s, signer)).ok
        await s.commit()


async def test_a_backlog_with_gaps_in_the_ids_is_sealed_whole_and_in_id_order(db, test_settings):
    """The sealer walks windows of ids: a gap wider than a window (ids taken by writers that
    rolled back) is stepped over, and a backlog of several windows is sealed in one round."""
    from app.services.audit.chain import BATCH

    async def append(n: int) -> list[int]:
        rows = await db.execute(
            text(
                "INSERT INTO audit_entries (actor_name, actor_role, action, entity, digest)"
                " SELECT 'test', 'admin', 'test.backlog', 'test', jsonb_build_object('n', g)"
                " FROM generate_series(1, :n) g RETURNING id"
            ),
            {"n": n},
        )
        return [r.id for r in rows]

    signer = get_signer(test_settings)
    await seal_pending(db, signer)
    first = await append(BATCH + 7)  # more than one window
    await db.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('audit_entries', 'id'),"
            " (SELECT max(id) FROM audit_entries) + :gap)"
        ),
        {"gap": 3 * BATCH},
    )
    second = await append(5)
    assert second[0] - first[-1] > 3 * BATCH
    assert await seal_pending(db, signer) == len(first) + len(second)
    rows = (
        await db.execute(
            text(
                "SELECT id, position FROM audit_entries WHERE action = 'test.backlog'"
                " ORDER BY position"
            )
        )
    ).all()
    assert [r.id for r in rows] == sorted(first + second)
    positions = [r.position for r in rows]
    assert positions == list(range(positions[0], positions[0] + len(rows)))
    unsealed = "SELECT count(*) FROM audit_entries WHERE position IS NULL"
    assert (await db.execute(text(unsealed))).scalar() == 0
    assert (await verify(db, signer)).ok
