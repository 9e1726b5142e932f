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


async def survey_subject(client, *, allowed=True):
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
        await client.put(
            f"/v1/subjects/{s['id']}/bases/surveys",
            headers=crm,
            json={"basis": "legitimate_interests", "lia_ref": "LIA-S"},
        )
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


async def run_once(settings, engine):
    worker = SurveymonkeySync(
        settings, create_sessionmaker(engine), progress=Progress(interactive=False)
    )
    try:
        await worker.run_once()
    finally:
        await worker.aclose()


async def test_opt_outs_come_in_and_denied_opted_out_and_erased_contacts_go(
    live, sm, committed_engine, test_settings
):
    fake, url = sm
    settings = test_settings.model_copy(
        update={
            "surveymonkey_access_token": SecretStr(fake.token),
            "surveymonkey_base_url": f"{url}/v3",
            "surveymonkey_contact_list_id": LIST,
            "sync_backoff_seconds": 0.01,
        }
    )
    kept, erased = await survey_subject(live), await survey_subject(live)
    opted = await survey_subject(live)
    await live.post(
        "/v1/opt-outs", headers=live.crm, json={"email": opted["email"], "source": "crm"}
    )
    denied = await survey_subject(live, allowed=False)
    sm_optout = await survey_subject(live)
    for s in (kept, erased, opted, denied):
        fake.add(s["email"])
    fake.add(sm_optout["email"], status="optout")
    fake.add("stranger@example.org")  # no subject of ours: the gate denies it
    fake.faults.fail_next(2, 429, "0")

    await run_once(settings, committed_engine)
    names = {
        v["email"]: k
        for k, v in {"kept": kept, "erased": erased, "opted": opted, "denied": denied}.items()
    }
    assert {names.get(e, e) for e in fake.emails_in(LIST)} == {"kept", "erased"}
    check = (
        await live.get(f"/v1/opt-outs/check?email={sm_optout['email']}", headers=live.crm)
    ).json()
    assert check == {"opted_out": True, "channels": ["email"]}
    async with committed_engine.connect() as c:
        source = (
            await c.execute(
                text(
                    "SELECT source FROM marketing_optouts WHERE reason = 'opted out in SurveyMonkey'"
                )
            )
        ).all()
        judged = (
            await c.execute(
                text(
                    "SELECT count(*) FROM decisions WHERE purpose = 'surveys'"
                    " AND requester_name LIKE 'sync-worker:surveymonkey:%'"
                )
            )
        ).scalar()
    assert [s.source for s in source] == ["surveymonkey"]
    assert judged == 5  # every active contact of the list judged, each a stored decision

    await erase(live, erased["id"])
    deletes = fake.faults.count("DELETE")
    await run_once(settings, committed_engine)
    assert fake.emails_in(LIST) == {kept["email"]}
    assert erased["email"] not in {c["email"] for c in fake.contacts.values()}
    assert fake.faults.count("DELETE") == deletes + 1


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
