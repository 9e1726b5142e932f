"""The MailChimp sync worker end to end, against the fake MailChimp on 127.0.0.1."""

import hashlib
import logging

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.core.crypto import email_hash
from app.core.db import create_sessionmaker
from app.integrations.mailchimp_sync import MailchimpSync
from app.integrations.progress import Progress
from app.services.access import api_keys
from tests.fakes.mailchimp import FakeMailchimp
from tests.sync_support import (  # noqa: F401
    allowed_subject,
    committed_engine,
    committed_url,
    erase,
    live,
    serve,
    withdraw,
)

LIST = "a1b2c3d4e5"


def md5(email):
    return hashlib.md5(email.lower().encode()).hexdigest()


@pytest.fixture
def fake():
    return FakeMailchimp(list_ids=(LIST,))


@pytest.fixture
def worker_for(fake, serve, committed_engine, test_settings):
    url = serve(fake.app)
    settings = test_settings.model_copy(
        update={
            "mailchimp_api_key": SecretStr(fake.api_key),
            "mailchimp_base_url": f"{url}/3.0",
            "mailchimp_list_id": LIST,
            "sync_batch_size": 10,
            "sync_backoff_seconds": 0.01,
            "sync_max_attempts": 10,
        }
    )
    made = []

    def make(overrides=None, **kw):
        w = MailchimpSync(
            settings.model_copy(update=overrides or {}),
            create_sessionmaker(committed_engine),
            progress=Progress(interactive=False),
            **kw,
        )
        made.append(w)
        return w

    yield make


async def run_once(make, overrides=None, **kw):
    worker = make(overrides, **kw)
    try:
        await worker.run_once()
    finally:
        await worker.aclose()


async def expected_statuses(engine):
    """What MailChimp must hold: every subject the gate allows, subscribed."""
    from app.core.auth import ROLE_SCOPES, Principal
    from app.services.gate import audiences

    principal = Principal(None, "check", "auditor", ROLE_SCOPES["auditor"])
    async with create_sessionmaker(engine)() as session:
        page = await audiences.page(
            session,
            principal,
            purpose="email_campaigns",
            recipient="mailchimp",
            limit=1000,
            cursor=None,
        )
        await session.rollback()
    return {md5(m.email): "subscribed" for m in page.items}


async def test_first_sync_then_withdrawal_erasure_rectification_and_a_late_restriction(
    live, fake, worker_for, committed_engine
):
    people = [await allowed_subject(live) for _ in range(23)]
    denied = (
        await live.post(
            "/v1/subjects",
            json={"email": "no-basis@example.com", "category": "prospect", "source": "enquiry"},
            headers=live.crm,
        )
    ).json()
    await run_once(worker_for)
    held = fake.statuses(LIST)
    assert held == {md5(p["email"]): "subscribed" for p in people}
    assert md5(denied["email"]) not in held
    assert fake.faults.count("POST", f"/lists/{LIST}") == 3  # 23 members, 10 a call
    member = fake.members(LIST)[md5(people[0]["email"])]
    assert member["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}
    async with committed_engine.connect() as c:
        stored = (
            await c.execute(
                text(
                    "SELECT count(*) FROM decisions WHERE requester_name LIKE 'sync-worker:mailchimp:%'"
                    " AND allowed"
                )
            )
        ).scalar()
    assert stored == 23  # each member handed out is a stored decision

    withdrawn, erased, moved = people[0], people[1], people[2]
    r = await withdraw(live, withdrawn["id"])
    assert r.status_code == 201, r.text
    await erase(live, erased["id"])
    new_email = "moved-" + moved["email"]
    r = await live.patch(f"/v1/subjects/{moved['id']}", json={"email": new_email}, headers=live.crm)
    assert r.status_code == 200
    late = await allowed_subject(live)  # its feed entries say it was allowed...
    async with committed_engine.begin() as c:  # ...then it is restricted (no entry read yet)
        await c.execute(
            text("UPDATE subjects SET restricted = true WHERE id = :i"), {"i": late["id"]}
        )
    newcomer = await allowed_subject(live, name="Grace")  # allowed after the first sync
    await run_once(worker_for)

    held = fake.statuses(LIST)
    assert held[md5(withdrawn["email"])] == "unsubscribed"
    assert md5(erased["email"]) not in held and md5(erased["email"]) in fake.forgotten[LIST]
    assert fake.faults.count("POST", "/actions/delete-permanent") == 1
    assert md5(moved["email"]) not in held
    assert fake.members(LIST)[md5(new_email)]["email_address"] == new_email
    assert md5(late["email"]) not in held
    late_puts = [c for c in fake.faults.calls if c.method == "PUT" and md5(late["email"]) in c.path]
    assert late_puts == []  # never upserted: the gate said no at the moment of the push
    assert held[md5(newcomer["email"])] == "subscribed"
    assert fake.members(LIST)[md5(newcomer["email"])]["merge_fields"] == {
        "FNAME": "Grace",
        "LNAME": "",
    }
    expected = await expected_statuses(committed_engine)
    assert {h: s for h, s in held.items() if s == "subscribed"} == expected

    # A third run has nothing to do: no remote writes.
    writes = len([c for c in fake.faults.calls if c.method != "GET"])
    await run_once(worker_for)
    assert len([c for c in fake.faults.calls if c.method != "GET"]) == writes


async def test_unsubscribed_and_cleaned_members_are_read_back(
    live, fake, worker_for, committed_engine
):
    people = [await allowed_subject(live) for _ in range(3)]
    await run_once(worker_for)
    fake.members(LIST)[md5(people[0]["email"])]["status"] = "unsubscribed"
    fake.members(LIST)[md5(people[1]["email"])]["status"] = "cleaned"
    await run_once(worker_for)
    d = (
        await live.post(
            "/v1/decisions",
            json={"subject_id": people[0]["id"], "purpose": "email_campaigns"},
            headers=live.crm,
        )
    ).json()
    assert d["reasons"] == ["marketing_opt_out"]
    events = (
        await live.get(f"/v1/sync/mailchimp-events?subject_id={people[1]['id']}", headers=live.crm)
    ).json()["items"]
    assert [e["type"] for e in events] == ["cleaned"]
    # Reading back again records nothing twice.
    async with committed_engine.connect() as c:
        count = (await c.execute(text("SELECT count(*) FROM mailchimp_events"))).scalar()
    await run_once(worker_for)
    async with committed_engine.connect() as c:
        assert (await c.execute(text("SELECT count(*) FROM mailchimp_events"))).scalar() == count


async def test_a_refused_member_is_logged_by_hash_and_skipped(live, fake, worker_for, caplog):
    people = [await allowed_subject(live) for _ in range(4)]
    blocked = people[2]["email"]
    fake.members(LIST)[md5(blocked)] = {  # in a compliance state in MailChimp already
        "id": md5(blocked),
        "email_address": blocked,
        "status": "cleaned",
        "merge_fields": {},
        "last_changed": "2020-01-01T00:00:00+00:00",
        "list_id": LIST,
    }
    with caplog.at_level(logging.INFO, logger="consent_api.sync"):
        await run_once(worker_for)
    held = fake.statuses(LIST)
    assert sum(1 for s in held.values() if s == "subscribed") == 3
    assert held[md5(blocked)] == "cleaned"
    refused = [r for r in caplog.records if r.getMessage().startswith("mailchimp refused")]
    # Named by the service's keyed hash, never by MailChimp's unsalted MD5 of the address.
    assert any(getattr(r, "email_hash", None) == email_hash(blocked) for r in refused)
    assert not any(md5(blocked) in str(vars(r)) for r in caplog.records)
    for p in people:
        assert p["email"] not in caplog.text


async def _outdated_entries(engine):
    async with engine.connect() as c:
        rows = await c.execute(
            text(
                "SELECT subject_id::text, purpose, seq IS NOT NULL FROM changes"
                " WHERE kind = 'consent.outdated' ORDER BY id"
            )
        )
        return [tuple(r) for r in rows]


async def test_a_policy_asking_for_consent_again_unsubscribes_once_it_takes_effect(
    live, fake, worker_for, committed_engine
):
    """Re-consent changes the gate's answer with no write about the subject: the feed says
    `consent.outdated` once the version has taken effect (not before), and the worker
    unsubscribes the members whose consent it outdated."""
    asked, kept = await allowed_subject(live), await allowed_subject(live)
    await run_once(worker_for)
    assert fake.statuses(LIST) == {
        md5(asked["email"]): "subscribed",
        md5(kept["email"]): "subscribed",
    }
    # `kept` consents again under the coming version before it takes effect.
    version = f"reconsent-{asked['id'][:8]}"
    sha = hashlib.sha256(version.encode()).hexdigest()
    async with create_sessionmaker(committed_engine)() as session:
        admin = {
            "Authorization": f"Bearer {await api_keys.create_key(session, name='a', role='admin')}"
        }
        await session.commit()
    try:
        r = await live.post(
            "/v1/policies",
            headers=admin,
            json={
                "version": version,
                "text_sha256": sha,
                "published_at": "2999-01-01T00:00:00Z",
                "reconsent_purposes": ["email_campaigns"],
            },
        )
        assert r.status_code == 201, r.text
        r = await live.post(
            "/v1/consent-events",
            headers=live.crm,
            json={
                "subject_id": kept["id"],
                "purpose": "email_campaigns",
                "action": "given",
                "method": "web_form",
                "policy_version": version,
                "notice_text": "Yes, e-mail me.",
            },
        )
        assert r.status_code == 201, r.text
        await run_once(worker_for)  # not in effect yet: nothing changes, no entry
        assert await _outdated_entries(committed_engine) == []
        assert fake.statuses(LIST)[md5(asked["email"])] == "subscribed"

        async with committed_engine.begin() as c:  # the publication date arrives
            await c.execute(
                text(
                    "UPDATE policies SET published_at = now() - interval '1 second'"
                    " WHERE version = :v"
                ),
                {"v": version},
            )
        await run_once(worker_for)
        assert fake.statuses(LIST) == {
            md5(asked["email"]): "unsubscribed",
            md5(kept["email"]): "subscribed",
        }
        expected = [(asked["id"], "email_campaigns", True)]  # for `asked` only, sequenced
        assert await _outdated_entries(committed_engine) == expected
        await run_once(worker_for)  # and never written again
        assert await _outdated_entries(committed_engine) == expected
    finally:  # policies outlive the per-test truncation: this one must not reach other tests
        async with committed_engine.begin() as c:
            await c.execute(text("TRUNCATE consent_events, consent_state CASCADE"))
            await c.execute(text("DELETE FROM policies WHERE version = :v"), {"v": version})
