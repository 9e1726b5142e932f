"""Audiences: exactly the subjects the gate allows, every one handed out a stored decision."""

import random
import uuid

import orjson
from sqlalchemy import text

from app.core.auth import ROLE_SCOPES, Principal
from app.services.gate import audiences
from app.services.gate.decisions import decide
from tests import gate_state as gs

CRM = Principal(uuid.uuid4(), "audience-test", "crm", ROLE_SCOPES["crm"])


async def _population(db, n=80, seed=10):
    rng = random.Random(seed)
    ids = []
    for _ in range(n):
        sid = await gs.subject(db, restricted=rng.random() < 0.1, erased=rng.random() < 0.08)
        basis = rng.choice(["consent", "legitimate_interests", "contract", None])
        if basis:
            await gs.basis(db, sid, "email_campaigns", basis)
        if rng.random() < 0.6:
            await gs.consent(db, sid, "email_campaigns", rng.choice(["given", "withdrawn"]))
        if rng.random() < 0.7:
            await gs.consent(db, sid, "international_transfer", "given", "mailchimp")
        if rng.random() < 0.1:
            await gs.objection(db, sid, "email_campaigns")
        if rng.random() < 0.1:
            email = await gs.email_of(db, sid)
            if email:
                await gs.opt_out(db, email)
        ids.append(sid)
    # Some merged into another (the same person held twice): the gate answers subject_merged.
    merged = random.Random(seed + 1).sample(ids[1:], k=max(1, n // 10))
    await db.execute(
        text("UPDATE subjects SET merged_into = :into, merged_at = now() WHERE id = ANY(:ids)"),
        {"into": ids[0], "ids": merged},
    )
    return ids


async def _single(db, ids, recipient):
    allowed = set()
    for sid in ids:
        d = await decide(db, CRM, subject=sid, purpose="email_campaigns", recipient=recipient)
        if d.allowed:
            allowed.add(sid)
    return allowed


async def test_the_audience_equals_the_single_decisions_on_a_generated_population(db):
    ids = await _population(db)
    for recipient in (None, "mailchimp"):
        expected = await _single(db, ids, recipient)
        assert 0 < len(expected) < len(ids)
        got, cursor = [], None
        while True:
            page = await audiences.page(
                db, CRM, purpose="email_campaigns", recipient=recipient, limit=7, cursor=cursor
            )
            assert len(page.items) <= 7
            got += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [m.subject_id for m in got] == sorted(expected)  # each once, in id order
        assert all(m.email and m.email.endswith("@example.com") for m in got)


async def test_pages_ndjson_and_stored_decisions_over_http(client, db, make_key):
    ids = await _population(db, n=40, seed=3)
    await db.commit()
    expected = await _single(db, ids, "mailchimp")
    sync = await make_key("sync")
    before = (await db.execute(text("SELECT count(*) FROM decisions"))).scalar()
    url = "/v1/audiences/email_campaigns?recipient=mailchimp"
    got, cursor = [], None
    while True:
        r = await client.get(
            url + "&limit=5" + (f"&cursor={cursor}" if cursor else ""), headers=sync
        )
        assert r.status_code == 200, r.text
        got += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert {uuid.UUID(i["subject_id"]) for i in got} == expected
    assert set(got[0]) == {"subject_id", "email", "name", "company"}
    stored = (
        await db.execute(
            text(
                "SELECT subject_id, allowed FROM decisions WHERE requester_role = 'sync'"
                " AND purpose = 'email_campaigns' AND recipient = 'mailchimp'"
            )
        )
    ).all()
    assert {r.subject_id for r in stored} == expected and all(r.allowed for r in stored)
    assert (await db.execute(text("SELECT count(*) FROM decisions"))).scalar() == before + len(
        expected
    )
    # One audit entry per chunk (statement), counting the decisions it stored.
    audited = (
        await db.execute(
            text(
                "SELECT count(*), sum((digest ->> 'count')::int) FROM audit_entries"
                " WHERE action = 'decision.statement' AND actor_role = 'sync'"
            )
        )
    ).one()
    assert audited[1] == len(expected) and 1 <= audited[0] <= len(expected)

    streamed = await client.get(url, headers={**sync, "Accept": "application/x-ndjson"})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in streamed.content.splitlines()]
    assert lines == got


async def test_the_ndjson_stream_is_one_member_per_line_whatever_the_values(client, db, make_key):
    """PostgreSQL writes the stream's lines: a newline, quotes, a backslash, a control
    character or non-ASCII in a value stay inside one JSON line, with the same values as
    the JSON pages."""
    awkward = {
        'line\nbreak "quoted" back\\slash': "tab\there \x01",
        "Zoë Ångström 😀": "\u2028 separator, \r return",
        "plain": None,
    }
    ids = []
    for name, company in awkward.items():
        sid = await gs.subject(db)
        await gs.basis(db, sid, "email_campaigns", "legitimate_interests")
        await db.execute(
            text("UPDATE subjects SET name = :n, company = :c WHERE id = :id"),
            {"n": name, "c": company, "id": sid},
        )
        ids.append(sid)
    await db.commit()
    sync = await make_key("sync")
    url = "/v1/audiences/email_campaigns"
    streamed = await client.get(url, headers={**sync, "Accept": "application/x-ndjson"})
    assert streamed.status_code == 200
    assert streamed.content.endswith(b"\n")
    lines = [orjson.loads(line) for line in streamed.content.split(b"\n")[:-1]]
    ours = {uuid.UUID(m["subject_id"]): m for m in lines if uuid.UUID(m["subject_id"]) in ids}
    assert {sid: (m["name"], m["company"]) for sid, m in ours.items()} == dict(
        zip(ids, awkward.items(), strict=True)
    )
    assert all(list(m) == ["subject_id", "email", "name", "company"] for m in lines)
    paged, query = [], "?limit=1000"
    while query:
        page = (await client.get(url + query, headers=sync)).json()
        paged += page["items"]
        query = page["next_cursor"] and f"?limit=1000&cursor={page['next_cursor']}"
    assert lines == paged


async def test_roles_and_bad_input(client, make_key):
    for role, status in (("sync", 200), ("crm", 200), ("auditor", 200), ("website", 403)):
        r = await client.get("/v1/audiences/email_campaigns", headers=await make_key(role))
        assert r.status_code == status, role
    sync = await make_key("sync")
    r = await client.get("/v1/audiences/no_such_purpose", headers=sync)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem")
    r = await client.get("/v1/audiences/email_campaigns?recipient=nobody", headers=sync)
    assert r.status_code == 422
    r = await client.get(
        "/v1/audiences/email_campaigns?recipient=nobody",
        headers={**sync, "Accept": "application/x-ndjson"},
    )
    assert r.status_code == 422
    r = await client.get("/v1/audiences/email_campaigns?cursor=bm9wZQ", headers=sync)
    assert r.status_code == 422
    assert (await client.get("/v1/audiences/email_campaigns")).status_code == 401


async def _planner_settings(con) -> tuple[str, str]:
    row = await con.fetchrow(
        "SELECT current_setting('plan_cache_mode'), current_setting('random_page_cost')"
    )
    return row[0], row[1]


async def test_a_chunk_is_planned_for_its_size_and_the_connection_keeps_its_settings(engine):
    """The audience's statement is planned for its own parameters (the generic plan hash-
    joined all of `subjects` per chunk); the settings end with the chunk's transaction, so a
    pooled connection goes back to the hot paths' generic plans."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        con = raw.driver_connection
        assert not con.is_in_transaction()
        before = await _planner_settings(con)  # the pool's (not set through PgBouncer)
        assert before != ("force_custom_plan", "1.1")
        async with audiences.planned_for_its_size(con):
            assert con.is_in_transaction()
            assert await _planner_settings(con) == ("force_custom_plan", "1.1")
        assert not con.is_in_transaction()
        assert await _planner_settings(con) == before
        # Inside the caller's transaction: for that transaction only.
        async with con.transaction():
            async with audiences.planned_for_its_size(con):
                assert await _planner_settings(con) == ("force_custom_plan", "1.1")
        assert await _planner_settings(con) == before
