"""The SurveyMonkey sync worker against the fake SurveyMonkey on 127.0.0.1."""

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.core.db import create_sessionmaker
from app.integrations.progress import Progress
from app.integrations.surveymonkey_sync import SurveymonkeySync
from tests.fakes.surveymonkey import FakeSurveymonkey
from tests.sync_support import committed_engine, committed_url, erase, live, serve  # noqa: F401

LIST = "4321"


async def survey_subject(client, *, allowed=True, basis="legitimate_interests"):
    """A subject on the survey list; `allowed`: the gate allows it for surveys to
    SurveyMonkey, on `basis` (legitimate interests, or consent given on the web form)."""
    crm = client.crm
    s = (
        await client.post(
            "/v1/subjects",
            headers=crm,
            json={
                "email": f"sv-{__import__('uuid').uuid4().hex[:8]}@example.com",
                "name": "Grace Hopper",
                "category": "customer_contact",
                "source": "enquiry",
            },
        )
    ).json()
    if allowed:
        body = {"basis": basis, "lia_ref": "LIA-S"} if basis != "consent" else {"basis": basis}
        r = await client.put(f"/v1/subjects/{s['id']}/bases/surveys", headers=crm, json=body)
        assert r.status_code == 200, r.text
        if basis == "consent":
            r = await client.post(
                "/v1/consent-events",
                headers=crm,
                json={
                    "subject_id": s["id"],
                    "purpose": "surveys",
                    "action": "given",
                    "method": "web_form",
                    "policy_version": "1",
                    "notice_text": "Yes, ask me for feedback in surveys.",
                },
            )
            assert r.status_code == 201, r.text
        r = await client.post(
            "/v1/consent-events",
            headers=crm,
            json={
                "subject_id": s["id"],
                "purpose": "international_transfer",
                "recipient": "surveymonkey",
                "action": "given",
                "method": "web_form",
                "policy_version": "1",
                "notice_text": "Transfer to SurveyMonkey (US)",
            },
        )
        assert r.status_code == 201, r.text
    return s


@pytest.fixture
def sm(serve):
    fake = FakeSurveymonkey(list_ids=(LIST,))
    return fake, serve(fake.app)


def sm_settings(test_settings, fake, url):
    return test_settings.model_copy(
        update={
            "surveymonkey_access_token": SecretStr(fake.token),
            "surveymonkey_base_url": f"{url}/v3",
            "surveymonkey_contact_list_id": LIST,
            "sync_backoff_seconds": 0.01,
        }
    )


async def decision(client, subject_id, purpose="surveys", recipient="surveymonkey"):
    body = {"subject_id": subject_id, "purpose": purpose, "recipient": recipient}
    r = await client.post("/v1/decisions", headers=client.crm, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def run_once(settings, engine):
    worker = SurveymonkeySync(
        settings, create_sessionmaker(engine), progress=Progress(interactive=False)
    )
    try:
        await worker.run_once()
    finally:
        await worker.aclose()


async def test_sm_opt_outs_become_objections_and_denied_and_erased_contacts_go(
    live, sm, committed_engine, test_settings
):
    fake, url = sm
    settings = sm_settings(test_settings, fake, url)
    kept, erased = await survey_subject(live), await survey_subject(live)
    opted = await survey_subject(live)
    await live.post(
        "/v1/opt-outs", headers=live.crm, json={"email": opted["email"], "source": "crm"}
    )
    denied = await survey_subject(live, allowed=False)
    sm_optout = await survey_subject(live)
    unbased = await survey_subject(live, allowed=False)  # no basis for surveys yet
    for s in (kept, erased, opted, denied):
        fake.add(s["email"])
    fake.add(sm_optout["email"], status="optout")
    fake.add(unbased["email"], status="optout")
    fake.add("stranger@example.org")  # no subject of ours: the gate denies it
    fake.faults.fail_next(2, 429, "0")

    await run_once(settings, committed_engine)
    names = {
        v["email"]: k
        for k, v in {"kept": kept, "erased": erased, "opted": opted, "denied": denied}.items()
    }
    # A marketing opt-out is no reason to leave a survey list: `surveys` is not direct
    # marketing, and the gate is the only rule.
    assert {names.get(e, e) for e in fake.emails_in(LIST)} == {"kept", "erased", "opted"}
    # The SurveyMonkey opt-out (basis legitimate interests) is an objection to surveys, not
    # a marketing opt-out; the gate now denies it, and its contact is gone.
    # With no basis yet, the objection is recorded all the same (it bites once the basis is
    # legitimate interests); the gate denies for want of a basis, and the contact goes too.
    held = {c["email"] for c in fake.contacts.values()}
    assert sm_optout["email"] not in held and unbased["email"] not in held
    check = (
        await live.get(f"/v1/opt-outs/check?email={sm_optout['email']}", headers=live.crm)
    ).json()
    assert check == {"opted_out": False, "channels": []}
    answer = await decision(live, sm_optout["id"])
    assert (answer["allowed"], answer["basis"], answer["reasons"]) == (
        False,
        "legitimate_interests",
        ["objected"],
    )
    async with committed_engine.connect() as c:
        objected = (
            await c.execute(text("SELECT subject_id::text, purpose, source FROM objections"))
        ).all()
        judged = (
            await c.execute(
                text(
                    "SELECT count(*) FROM decisions WHERE purpose = 'surveys'"
                    " AND requester_name LIKE 'sync-worker:surveymonkey:%'"
                )
            )
        ).scalar()
        trail = (
            await c.execute(
                text(
                    "SELECT actor_name, digest ->> 'purpose' FROM audit_entries"
                    " WHERE action = 'objection.create' AND entity_id = :s"
                ),
                {"s": sm_optout["id"]},
            )
        ).all()
        fed = (
            await c.execute(
                text("SELECT purpose FROM changes WHERE kind = 'objection' AND subject_id = :s"),
                {"s": sm_optout["id"]},
            )
        ).all()
        sm_optouts = (
            await c.execute(
                text("SELECT count(*) FROM marketing_optouts WHERE source = 'surveymonkey'")
            )
        ).scalar()
    assert sorted(tuple(r) for r in objected) == sorted(
        (s["id"], "surveys", "surveymonkey") for s in (sm_optout, unbased)
    )
    assert [tuple(r) for r in trail] == [(f"sync-worker:surveymonkey:{LIST}:surveys", "surveys")]
    assert [r.purpose for r in fed] == ["surveys"]
    assert sm_optouts == 0
    # every active contact of the list judged, and the opted-out ones after their
    # objections: each a stored decision
    assert judged == 7

    await erase(live, erased["id"])
    deletes = fake.faults.count("DELETE")
    await run_once(settings, committed_engine)
    assert fake.emails_in(LIST) == {kept["email"], opted["email"]}
    assert erased["email"] not in {c["email"] for c in fake.contacts.values()}
    assert fake.faults.count("DELETE") == deletes + 1


async def test_an_sm_opt_out_on_consent_is_a_withdrawal_recorded_once(
    live, sm, committed_engine, test_settings
):
    fake, url = sm
    settings = sm_settings(test_settings, fake, url)
    person = await survey_subject(live, basis="consent")
    assert (await decision(live, person["id"]))["allowed"] is True
    cid = fake.add(person["email"], status="optout")
    contact = dict(fake.contacts[cid])

    await run_once(settings, committed_engine)
    assert cid not in fake.contacts  # the gate denies it now: the contact is removed
    answer = await decision(live, person["id"])
    assert (answer["allowed"], answer["basis"], answer["reasons"]) == (
        False,
        "consent",
        ["consent_withdrawn"],
    )
    # SurveyMonkey still lists the opt-out (the delete was lost, say): read again, nothing
    # is recorded twice, and the contact goes.
    fake.add(contact["email"], status="optout", contact_id=cid)
    await run_once(settings, committed_engine)
    assert cid not in fake.contacts
    async with committed_engine.connect() as c:
        events = (
            await c.execute(
                text(
                    "SELECT action, method, form_id, recorded_by FROM consent_events"
                    " WHERE subject_id = :s AND purpose = 'surveys' ORDER BY recorded_at"
                ),
                {"s": person["id"]},
            )
        ).all()
        state = (
            await c.execute(
                text(
                    "SELECT s.status FROM consent_state s JOIN consent_events e"
                    " ON e.id = s.event_id WHERE s.subject_id = :s AND s.purpose = 'surveys'"
                    " AND e.form_id = :f"
                ),
                {"s": person["id"], "f": f"surveymonkey-optout:{cid}"},
            )
        ).scalar()
        fed = (
            await c.execute(
                text(
                    "SELECT count(*) FROM changes WHERE kind = 'consent.withdrawn'"
                    " AND subject_id = :s AND purpose = 'surveys'"
                ),
                {"s": person["id"]},
            )
        ).scalar()
        audited = (
            await c.execute(
                text(
                    "SELECT actor_name FROM audit_entries WHERE action = 'consent.withdrawn'"
                    " AND digest ->> 'subject_id' = :s"
                ),
                {"s": person["id"]},
            )
        ).all()
        objected = (await c.execute(text("SELECT count(*) FROM objections"))).scalar()
    worker = f"sync-worker:surveymonkey:{LIST}:surveys"
    assert [tuple(e) for e in events] == [
        ("given", "web_form", None, events[0].recorded_by),
        ("withdrawn", "email", f"surveymonkey-optout:{cid}", worker),
    ]
    assert state == "withdrawn"
    assert fed == 1
    assert [a.actor_name for a in audited] == [worker]
    assert objected == 0


async def test_a_marketing_opt_out_removes_a_survey_contact_only_once_surveys_is_marketing(
    live, sm, committed_engine, test_settings
):
    from app.core.db import create_sessionmaker
    from app.services.access import api_keys

    fake, url = sm
    settings = sm_settings(test_settings, fake, url)
    person = await survey_subject(live)
    r = await live.post(
        "/v1/opt-outs", headers=live.crm, json={"email": person["email"], "source": "mailchimp"}
    )
    assert r.status_code in (200, 201), r.text
    fake.add(person["email"])

    await run_once(settings, committed_engine)
    assert fake.emails_in(LIST) == {person["email"]}
    assert (await decision(live, person["id"]))["allowed"] is True

    async with create_sessionmaker(committed_engine)() as session:
        key = await api_keys.create_key(session, name="catalogue-admin", role="admin")
        await session.commit()
    admin = {"Authorization": f"Bearer {key}"}
    surveys = (await live.get("/v1/purposes?limit=100", headers=live.crm)).json()["items"]
    (before,) = [p for p in surveys if p["key"] == "surveys"]
    body = {k: before[k] for k in ("description", "allowed_bases", "direct_marketing")}
    assert body["direct_marketing"] is False
    try:
        r = await live.put(
            "/v1/purposes/surveys", headers=admin, json={**body, "direct_marketing": True}
        )
        assert r.status_code == 200, r.text
        answer = await decision(live, person["id"])
        assert (answer["allowed"], answer["reasons"]) == (False, ["marketing_opt_out"])
        await run_once(settings, committed_engine)
        assert fake.emails_in(LIST) == set()
    finally:
        # The catalogue outlives each test on the committed database: put it back.
        r = await live.put("/v1/purposes/surveys", headers=admin, json=body)
        assert r.status_code == 200, r.text


async def test_a_bad_token_is_one_clear_error(live, sm, committed_engine, test_settings):
    from app.integrations.worker import SyncFailed, run

    _fake, url = sm
    settings = test_settings.model_copy(
        update={
            "surveymonkey_access_token": SecretStr("wrong"),
            "surveymonkey_base_url": f"{url}/v3",
            "surveymonkey_contact_list_id": LIST,
        }
    )

    url_db = committed_engine.url.render_as_string(hide_password=False)
    with pytest.raises(SyncFailed, match="check the API key or access token"):
        await run("surveymonkey", settings, url_db, once=True, progress=Progress(interactive=False))
    with pytest.raises(SyncFailed, match="CONSENT_MAILCHIMP_API_KEY"):
        await run("mailchimp", settings, url_db, once=True, progress=Progress(interactive=False))
