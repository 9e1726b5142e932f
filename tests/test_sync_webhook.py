"""The MailChimp webhook: secret, form-encoded events, replays, what reaches the gate."""

from sqlalchemy import text

from tests.conftest import new_subject
from tests.test_consent import give

URL = "/v1/webhooks/mailchimp?secret=test-webhook-secret"
MARKETING = ["email_campaigns", "business_development", "content_subscriptions", "partner_referral"]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def event(kind, email, **data):
    body = {
        "type": kind,
        "fired_at": "2026-11-25 06:30:00",
        "data[email]": email,
        "data[list_id]": "a6b5da1054",
        "data[reason]": "manual",
    }
    body.update({f"data[{k}]": v for k, v in data.items()})
    return body


async def _allowed_subject(client, crm):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    for purpose in MARKETING:
        basis = "consent" if purpose == "content_subscriptions" else "legitimate_interests"
        r = await client.put(
            f"/v1/subjects/{s['id']}/bases/{purpose}",
            json={"basis": basis, "lia_ref": "LIA-7"},
            headers=crm,
        )
        assert r.status_code == 200, r.text
    r = await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    assert r.status_code == 201, r.text
    return s


async def _decisions(client, crm, s):
    out = {}
    for purpose in [*MARKETING, "day_to_day_communications"]:
        d = (
            await client.post(
                "/v1/decisions", json={"subject_id": s["id"], "purpose": purpose}, headers=crm
            )
        ).json()
        out[purpose] = d
    return out


async def test_an_unsubscribe_flips_the_gate_for_every_direct_marketing_purpose(client, crm, db):
    s = await _allowed_subject(client, crm)
    assert all(
        d["allowed"] for p, d in (await _decisions(client, crm, s)).items() if p in MARKETING
    )
    r = await client.post(URL, data=event("unsubscribe", s["email"].upper()))
    assert r.status_code == 200 and r.json() == {"type": "unsubscribe", "recorded": True}
    after = await _decisions(client, crm, s)
    for purpose in MARKETING:
        assert not after[purpose]["allowed"] and "marketing_opt_out" in after[purpose]["reasons"]
    optout = (
        await db.execute(
            text(
                "SELECT o.channel, o.source FROM marketing_optouts o JOIN subjects s"
                " ON s.email_hash = o.email_hash WHERE s.id = :i"
            ),
            {"i": s["id"]},
        )
    ).all()
    assert [(o.channel, o.source) for o in optout] == [("email", "mailchimp")]
    # A replay changes nothing twice.
    count = lambda: db.execute(text("SELECT count(*) FROM mailchimp_events"))  # noqa: E731
    before = (await count()).scalar()
    changes_before = (await db.execute(text("SELECT count(*) FROM changes"))).scalar()
    again = await client.post(URL, data=event("unsubscribe", s["email"].upper()))
    assert again.status_code == 200 and again.json()["recorded"] is False
    assert (await count()).scalar() == before
    assert (await db.execute(text("SELECT count(*) FROM changes"))).scalar() == changes_before


async def test_wrong_or_missing_secret_is_401_and_changes_nothing(client, crm, db):
    s = await _allowed_subject(client, crm)
    for url in (
        "/v1/webhooks/mailchimp",
        "/v1/webhooks/mailchimp?secret=nope",
        "/v1/webhooks/mailchimp?secret=test-webhook-secreT",
    ):
        r = await client.post(url, data=event("unsubscribe", s["email"]))
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem")
        assert s["email"] not in r.text
        assert (await client.get(url)).status_code == 401
    assert (await db.execute(text("SELECT count(*) FROM mailchimp_events"))).scalar() == 0
    assert all(
        d["allowed"] for p, d in (await _decisions(client, crm, s)).items() if p in MARKETING
    )
    assert (await client.get(URL)).status_code == 200  # MailChimp's URL check


async def test_subscribe_and_profile_change_nothing(client, crm, db):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    for kind in ("subscribe", "profile"):
        r = await client.post(URL, data=event(kind, s["email"], **{"merges][FNAME": "Ada"}))
        assert r.status_code == 200 and r.json() == {"type": kind, "recorded": False}
    d = (
        await client.post(
            "/v1/decisions", json={"subject_id": s["id"], "purpose": "email_campaigns"}, headers=crm
        )
    ).json()
    assert d["reasons"] == ["no_lawful_basis"]  # a MailChimp subscribe is not consent
    assert (await db.execute(text("SELECT count(*) FROM mailchimp_events"))).scalar() == 0


async def test_cleaned_and_upemail_are_recorded_for_the_crm(client, crm, make_key):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    r = await client.post(URL, data=event("cleaned", s["email"], reason="hard"))
    assert r.json()["recorded"] is True
    new = "moved-" + s["email"]
    r = await client.post(
        URL,
        data={
            "type": "upemail",
            "fired_at": "2026-11-25 06:31:00",
            "data[list_id]": "a6b5da1054",
            "data[new_id]": "51aa6610c9",
            "data[new_email]": new,
            "data[old_email]": s["email"],
        },
    )
    assert r.json()["recorded"] is True
    page = (await client.get(f"/v1/sync/mailchimp-events?subject_id={s['id']}", headers=crm)).json()
    assert [(e["type"], e["reason"]) for e in page["items"]] == [
        ("cleaned", "hard"),
        ("upemail", None),
    ]
    assert page["items"][1]["new_email"] == new and page["items"][1]["old_email"] == s["email"]
    # The subject itself is unchanged: MailChimp's change is for the CRM to review.
    assert (await client.get(f"/v1/subjects/{s['id']}", headers=crm)).json()["email"] == s["email"]
    sync = await make_key("sync")
    feed = (await client.get("/v1/changes?after=0&limit=1000", headers=sync)).json()["items"]
    kinds = [c["kind"] for c in feed if c["subject_id"] == s["id"]]
    assert kinds[-2:] == ["mailchimp.cleaned", "mailchimp.upemail"]
    assert (await client.get("/v1/sync/mailchimp-events", headers=sync)).status_code == 403


async def test_bad_payloads(client):
    assert (await client.post(URL, data={"fired_at": "x"})).status_code == 422
    assert (await client.post(URL, data={"type": "unsubscribe"})).status_code == 422
    assert (
        await client.post(URL, data={"type": "unsubscribe", "data[email]": "x" * 300})
    ).status_code == 422
    r = await client.post(URL, json={"type": "unsubscribe"})
    assert r.status_code == 415
    many = "&".join(f"f{i}=x" for i in range(300))
    r = await client.post(URL, content=f"type=unsubscribe&{many}", headers=FORM)
    assert r.status_code == 422


async def test_an_unconfigured_webhook_says_so(app, client):
    app.state.settings = app.state.settings.model_copy(update={"mailchimp_webhook_secret": None})
    r = await client.get(URL)
    assert r.status_code == 503 and "CONSENT_MAILCHIMP_WEBHOOK_SECRET" in r.json()["detail"]
