"""The change feed never skips a late commit, and carries what sync needs."""

import uuid

from sqlalchemy import text

from app.core.db import create_sessionmaker
from app.services.changes import feed as changes
from tests.conftest import new_subject
from tests.sync_support import committed_engine, committed_url  # noqa: F401
from tests.test_rights import _complete, _verified

APPEND = text(
    "INSERT INTO changes (kind, subject_id, email_hash, at) VALUES (:k, NULL, NULL, now())"
)


async def _read_all(engine, after):
    async with create_sessionmaker(engine)() as session:
        page = await changes.read(session, after=after, limit=1000)
        await session.commit()
    return page


async def test_a_lower_id_committed_late_is_not_skipped(committed_engine):
    """A takes its xid, B takes a later xid and the lower id, A commits, a reader reads,
    then B commits: the reader's next page has B's entry."""
    async with committed_engine.connect() as a, committed_engine.connect() as b:
        ta = await a.begin()
        await a.execute(text("SELECT pg_current_xact_id()"))
        tb = await b.begin()
        await b.execute(text("SELECT pg_current_xact_id()"))
        await b.execute(APPEND, {"k": "from-b"})
        await a.execute(APPEND, {"k": "from-a"})
        ids = dict(
            (await a.execute(text("SELECT kind, id FROM changes WHERE kind = 'from-a'"))).all()
        )
        await ta.commit()
        first = await _read_all(committed_engine, 0)
        assert [c.kind for c in first.items] == ["from-a"]
        await tb.commit()
        second = await _read_all(committed_engine, first.next_after)
        assert [c.kind for c in second.items] == ["from-b"]
        assert second.items[0].seq > first.next_after
        async with committed_engine.connect() as c:
            b_id = (await c.execute(text("SELECT id FROM changes WHERE kind = 'from-b'"))).scalar()
        assert b_id < ids["from-a"]  # the interleaving really happened


async def test_a_reader_never_sees_a_running_transaction_and_positions_are_dense(
    committed_engine,
):
    async with committed_engine.connect() as w:
        tw = await w.begin()
        await w.execute(APPEND, {"k": "pending"})
        async with committed_engine.begin() as c:
            for _ in range(3):
                await c.execute(APPEND, {"k": "done"})
        page = await _read_all(committed_engine, 0)
        assert [c.kind for c in page.items] == ["done"] * 3
        await tw.commit()
    page = await _read_all(committed_engine, 0)
    assert [c.kind for c in page.items] == ["done", "done", "done", "pending"]
    assert [c.seq for c in page.items] == [1, 2, 3, 4]


async def _feed(client, sync, after):
    return (await client.get(f"/v1/changes?after={after}&limit=1000", headers=sync)).json()


async def test_the_feed_carries_creation_patch_bases_gpc_and_partial_erasure(client, crm, make_key):
    sync = await make_key("sync")
    start = (await _feed(client, sync, 0))["next_after"]
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await client.patch(
        f"/v1/subjects/{s['id']}",
        json={"email": f"new-{uuid.uuid4().hex[:6]}@example.com"},
        headers=crm,
    )
    await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns",
        json={"basis": "legitimate_interests", "lia_ref": "LIA-1"},
        headers=crm,
    )
    await client.delete(f"/v1/subjects/{s['id']}/bases/email_campaigns", headers=crm)
    page = await _feed(client, sync, start)
    kinds = [(c["kind"], c["subject_id"], c["purpose"]) for c in page["items"]]
    assert kinds == [
        ("subject.created", s["id"], None),
        ("subject.updated", s["id"], None),
        ("basis.set", s["id"], "email_campaigns"),
        ("basis.ended", s["id"], "email_campaigns"),
    ]
    # The PATCH entry carries the new address's keyed hash, never the address.
    assert page["items"][1]["email_hash"] != page["items"][0]["email_hash"]
    assert s["email"] not in str(page)


async def test_the_feed_carries_gpc_and_partial_erasure_objections(client, crm, make_key):
    sync = await make_key("sync")
    start = (await _feed(client, sync, 0))["next_after"]
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    # GPC: the browser's "no" withdraws and objects to partner_referral.
    r = await client.post(
        "/v1/consent-events",
        json={"subject_id": s["id"], "purpose": "content_subscriptions", "action": "withdrawn"},
        headers={**crm, "Sec-GPC": "1"},
    )
    assert r.status_code == 201, r.text
    gpc = (await _feed(client, sync, start))["items"]
    assert ("objection", s["id"], "partner_referral") in [
        (c["kind"], c["subject_id"], c["purpose"]) for c in gpc
    ]
    after_gpc = gpc[-1]["seq"]
    # Erasure refused in part while a contract runs: the other purposes are objected to.
    for purpose, body in (
        ("contractual_communications", {"basis": "contract", "contract_ref": "C-1"}),
        ("business_development", {"basis": "legitimate_interests", "lia_ref": "L-1"}),
    ):
        r = await client.put(f"/v1/subjects/{s['id']}/bases/{purpose}", json=body, headers=crm)
        assert r.status_code == 200, r.text
    req = await _verified(client, crm, "erasure", subject_id=s["id"])
    done = await _complete(client, crm, req)
    assert done["outcome"]["partial"] is True, done
    kinds = {
        (c["kind"], c["purpose"])
        for c in (await _feed(client, sync, after_gpc))["items"]
        if c["subject_id"] == s["id"]
    }
    assert ("subject.erased_in_part", None) in kinds
    assert ("objection", "business_development") in kinds
    assert ("objection", "contractual_communications") not in kinds  # kept for the contract
