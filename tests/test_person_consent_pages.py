"""The preference page over HTTP, asserting on the database: "I agree" makes consent the
basis where none is recorded, and the explicit transfer consent per recipient outside the
EEA/UK (§8, Art 49(1)(a)) is collected there and lets the gate allow the transfer."""

import re

from sqlalchemy import text

from tests.test_person_links import _csrf, _decide, _give, _links, _path, _subject


def _shown_sha(html: str, name: str, value: str) -> str:
    """The notice digest in the form whose hidden `name` field is `value`."""
    match = re.search(
        rf'name="{name}" value="{value}">\s*<input type="hidden" '
        r'name="notice_sha256" value="([0-9a-f]{64})"',
        html,
    )
    assert match, f"no form to agree to {value}"
    return match.group(1)


async def test_agreeing_on_the_page_makes_consent_the_basis(client, crm, db):
    s = await _subject(client, crm)  # no basis, no consent: the page alone makes them
    p = _path((await _links(client, crm, s["id"], "content_subscriptions"))["preference_url"])
    page = await client.get(p)
    form = {"csrf": _csrf(page.text), "purpose": "content_subscriptions", "policy_version": "1"}
    sha = _shown_sha(page.text, "purpose", "content_subscriptions")
    r = await client.post(p + "/give", data={**form, "notice_sha256": sha})
    assert r.status_code == 303, r.text
    event = (
        await db.execute(
            text(
                "SELECT id, recorded_by FROM consent_events WHERE subject_id = :s"
                " AND purpose = 'content_subscriptions' AND action = 'given'"
            ),
            {"s": s["id"]},
        )
    ).one()
    assert event.recorded_by == "person (signed link)"
    basis = (
        await db.execute(
            text(
                "SELECT b.basis, b.set_by, h.actor, h.previous FROM lawful_bases b"
                " JOIN lawful_basis_history h USING (subject_id, purpose)"
                " WHERE b.subject_id = :s AND b.purpose = 'content_subscriptions'"
            ),
            {"s": s["id"]},
        )
    ).one()
    actor = f"consent_event:{event.id}"
    assert tuple(basis) == ("consent", actor, actor, None)
    decision = await _decide(client, crm, s["id"], "content_subscriptions")
    assert decision["allowed"] is True and decision["basis"] == "consent"


async def test_the_page_collects_the_explicit_transfer_consent(client, crm, make_key, db):
    s = await _subject(client, crm)
    await _give(client, crm, s["id"])  # content_subscriptions: consent basis, consent given
    p = _path((await _links(client, crm, s["id"], "content_subscriptions"))["preference_url"])
    page = await client.get(p)
    # Every recipient outside the EEA/UK whose transfers rest on consent, and no other.
    section = page.text.split('id="transfers"', 1)[1].split('id="marketing"', 1)[0]
    for shown in ("MailChimp, in the United States", "SurveyMonkey, in the United States"):
        assert shown in section
    assert "BPM&#39;online Inc., in the United States" in section
    assert "Maximizer" not in section
    assert "not covered by a UK adequacy decision" in section
    assert "may not have the same protection as in the UK" in section
    before = await _decide_for(client, crm, s["id"], "content_subscriptions", "mailchimp")
    assert before["reasons"] == ["transfer_not_permitted"]
    csrf = _csrf(page.text)
    sha = _shown_sha(page.text, "recipient", "mailchimp")
    form = {"csrf": csrf, "recipient": "mailchimp", "policy_version": "1", "notice_sha256": sha}
    # A stale page, a recipient inside the UK, a missing form token: nothing recorded.
    assert (
        await client.post(p + "/transfer", data={**form, "notice_sha256": "0" * 64})
    ).status_code == 409
    assert (
        await client.post(p + "/transfer", data={**form, "recipient": "maximizer"})
    ).status_code == 422
    assert (await client.post(p + "/transfer", data={**form, "csrf": ""})).status_code == 403
    r = await client.post(p + "/transfer", data=form)
    assert r.status_code == 303 and r.headers["location"] == p + "?done=given"
    state = (
        await db.execute(
            text(
                "SELECT cs.status, e.method, e.recorded_by, e.policy_version, n.text"
                " FROM consent_state cs JOIN consent_events e ON e.id = cs.event_id"
                " JOIN consent_notices n ON n.sha256 = e.notice_sha256"
                " WHERE cs.subject_id = :s AND cs.purpose = 'international_transfer'"
                " AND cs.recipient = 'mailchimp'"
            ),
            {"s": s["id"]},
        )
    ).one()
    assert state[:4] == ("given", "web_form", "person (signed link)", "1")
    assert "MailChimp in the United States" in state.text and state.text in page.text
    after = await _decide_for(client, crm, s["id"], "content_subscriptions", "mailchimp")
    assert after["allowed"] is True, after
    sync = await make_key("sync")
    audience = await client.get(
        "/v1/audiences/content_subscriptions?recipient=mailchimp&limit=1000", headers=sync
    )
    assert s["id"] in [i["subject_id"] for i in audience.json()["items"]]
    # The page now offers to withdraw it, with the same form as any other consent.
    page = await client.get(p + "?done=given")
    mailchimp = page.text.split('id="transfer-mailchimp"', 1)[1].split("</li>", 1)[0]
    assert "You agreed on" in mailchimp and "Withdraw my consent" in mailchimp
    r = await client.post(
        p + "/withdraw",
        data={"csrf": csrf, "purpose": "international_transfer", "recipient": "mailchimp"},
    )
    assert r.status_code == 303
    withdrawn = await _decide_for(client, crm, s["id"], "content_subscriptions", "mailchimp")
    assert withdrawn["reasons"] == ["transfer_not_permitted"]


async def _decide_for(client, crm, sid, purpose, recipient):
    body = {"subject_id": sid, "purpose": purpose, "recipient": recipient}
    r = await client.post("/v1/decisions", json=body, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()
