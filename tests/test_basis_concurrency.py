"""Basis changes are serialised (DOMAIN.md, "Lawful basis"): concurrent PUTs of one basis make
one history chain (each entry's `previous` is what the entry before it set), and a basis PUT
racing an erasure never lands on the erased subject. Over HTTP on an app with its own engine
(every request its own transaction, committed), so the requests really overlap."""

import asyncio
import itertools

from sqlalchemy import text

from tests.conftest import new_subject
from tests.sync_support import committed_engine, committed_url, live  # noqa: F401

BASES = (
    {"basis": "consent"},
    {"basis": "legitimate_interests", "lia_ref": "LIA-7"},
)
PUTS = 20
NOTED = {"basis": "consent", "note": "Met at the trade fair"}


async def _history(engine, sid, purpose="email_campaigns"):
    async with engine.connect() as c:
        rows = await c.execute(
            text(
                "SELECT action, value, previous FROM lawful_basis_history"
                " WHERE subject_id = :s AND purpose = :p ORDER BY id"
            ),
            {"s": sid, "p": purpose},
        )
        return list(rows)


async def test_concurrent_basis_changes_make_one_history_chain(live, committed_engine):
    sid = (await live.post("/v1/subjects", json=new_subject(), headers=live.crm)).json()["id"]
    url = f"/v1/subjects/{sid}/bases/email_campaigns"
    answers = await asyncio.gather(
        *(live.put(url, json=BASES[i % 2], headers=live.crm) for i in range(PUTS))
    )
    assert [a.status_code for a in answers] == [200] * PUTS, [a.text for a in answers][:3]
    history = await _history(committed_engine, sid)
    assert len(history) == PUTS
    assert [h.previous for h in history].count(None) == 1 and history[0].previous is None
    for before, entry in itertools.pairwise(history):
        assert entry.previous == before.value
    current = (await live.get(f"/v1/subjects/{sid}/bases", headers=live.crm)).json()["items"]
    assert current[0]["basis"] == history[-1].value["basis"]


async def _erasure_request(live, sid):
    crm = live.crm
    req = (
        await live.post(
            "/v1/rights-requests", json={"type": "erasure", "subject_id": sid}, headers=crm
        )
    ).json()
    r = await live.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    assert r.status_code == 200, r.text
    return req["id"]


async def test_a_basis_put_racing_an_erasure_never_lands_on_the_erased_subject(
    live, committed_engine
):
    for _ in range(8):
        sid = (await live.post("/v1/subjects", json=new_subject(), headers=live.crm)).json()["id"]
        request_id = await _erasure_request(live, sid)
        put, erased = await asyncio.gather(
            live.put(f"/v1/subjects/{sid}/bases/email_campaigns", json=NOTED, headers=live.crm),
            live.post(f"/v1/rights-requests/{request_id}/complete", json={}, headers=live.crm),
        )
        assert erased.status_code == 200, erased.text
        assert put.status_code in (200, 409), put.text
        async with committed_engine.connect() as c:
            erased_at = (
                await c.execute(text("SELECT erased_at FROM subjects WHERE id = :s"), {"s": sid})
            ).scalar_one()
            notes = (
                await c.execute(
                    text(
                        "SELECT b.note, h.value ->> 'note' AS kept FROM lawful_bases b"
                        " JOIN lawful_basis_history h USING (subject_id, purpose)"
                        " WHERE b.subject_id = :s"
                    ),
                    {"s": sid},
                )
            ).all()
        assert erased_at is not None
        if put.status_code == 409:  # the erasure came first: nothing was written
            assert notes == []
        else:  # the basis came first, and the erasure saw it: its free text is gone
            assert [tuple(n) for n in notes] == [(None, None)]
        # And afterwards, a basis is refused on the erased subject.
        r = await live.put(
            f"/v1/subjects/{sid}/bases/email_campaigns", json=BASES[1], headers=live.crm
        )
        assert r.status_code == 409, r.text


async def test_consents_racing_basis_puts_keep_one_history_chain(live, committed_engine):
    """A consent given where no basis is recorded makes consent the basis in the consent's
    own statement, under the lock a basis PUT takes: racing PUTs still make one chain, the
    consent's entry (if any) can only be the first, and a consent never replaces a basis."""
    from tests.test_consent import give

    for _ in range(4):
        sid = (await live.post("/v1/subjects", json=new_subject(), headers=live.crm)).json()["id"]
        url = f"/v1/subjects/{sid}/bases/email_campaigns"
        consents = [
            live.post(
                "/v1/consent-events", json=give(sid, purpose="email_campaigns"), headers=live.crm
            )
            for _ in range(6)
        ]
        puts = [live.put(url, json=BASES[1], headers=live.crm) for _ in range(6)]
        answers = await asyncio.gather(*(x for pair in zip(consents, puts) for x in pair))
        assert [a.status_code for a in answers] == [201, 200] * 6, [a.text for a in answers][:3]
        history = await _history(committed_engine, sid)
        assert history[0].previous is None
        assert [h.previous for h in history].count(None) == 1
        for before, entry in itertools.pairwise(history):
            assert entry.previous == before.value
        async with committed_engine.connect() as c:
            actors = (
                (
                    await c.execute(
                        text(
                            "SELECT actor FROM lawful_basis_history WHERE subject_id = :s"
                            " AND purpose = 'email_campaigns' ORDER BY id"
                        ),
                        {"s": sid},
                    )
                )
                .scalars()
                .all()
            )
        from_consent = [i for i, a in enumerate(actors) if a.startswith("consent_event:")]
        assert from_consent in ([], [0])
        assert len(history) == 6 + len(from_consent)
        assert history[-1].value["basis"] == "legitimate_interests"
