"""The console's catalogue forms over HTTP: an admin's only (crm and auditor read the page and
are refused every form by the server, 403, with nothing changed), CSRF on each, the API's
own model refusing a bad form (422, shown on the page, nothing kept), a preview that counts
with the gate's SQL and keeps nothing, and a save that writes the row and the audit entry
the API's PUT writes."""

import uuid
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select, text

from app.models.audit import AuditEntry
from tests.conftest import new_subject
from tests.test_console_http import FORM, HTML, sign_in

KINDS = ("purpose", "recipient", "policy", "retention", "controller")


def _form(**fields: object) -> str:
    return urlencode(fields, doseq=True)


async def _audits(db, action: str) -> int:
    query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
    return (await db.execute(query)).scalar_one()


async def _recipient_purposes(db, key: str) -> list[str]:
    row = await db.execute(text("SELECT purposes FROM recipients WHERE key = :k"), {"k": key})
    return row.scalar_one()


async def _li_subject(client, crm, purpose: str = "surveys") -> str:
    """A person whose data for `purpose` rests on legitimate interests."""
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    put = await client.put(
        f"/v1/subjects/{sid}/bases/{purpose}",
        json={"basis": "legitimate_interests", "lia_ref": "LIA-7"},
        headers=crm,
    )
    assert put.status_code in (200, 201), put.text
    return sid


def _maximizer(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "key": "maximizer",
        "name": "Maximizer Software Ltd",
        "role": "partner",
        "country": "GB",
        "inside_eea_uk": "true",
        "purposes": ["partner_referral", "surveys"],
    }
    return fields | overrides


async def test_crm_and_auditor_read_the_page_and_are_refused_every_form(client, crm, auditor, db):
    for headers in (crm, auditor):
        page = await client.get("/console/catalogues", headers=headers | HTML)
        assert page.status_code == 200 and "<form" not in page.text.split("</header>")[1]
        assert "/console/catalogues/recipient" not in page.text
        for kind in KINDS:
            assert (
                await client.get(f"/console/catalogues/{kind}", headers=headers)
            ).status_code == 403
        r = await client.post(
            "/console/catalogues/recipient",
            content=_form(step="save", **_maximizer()),
            headers=headers | FORM,
        )
        assert r.status_code == 403
    assert await _recipient_purposes(db, "maximizer") == ["partner_referral"]


async def test_an_auditor_session_is_refused_too(client, auditor, db):
    await sign_in(client, auditor)
    r = await client.post(
        "/console/catalogues/purpose",
        content=_form(step="save", key="surveys", description="x", allowed_bases="consent"),
        headers=FORM,
    )
    assert r.status_code == 403


async def test_a_form_without_the_sessions_csrf_token_is_refused(client, admin, db):
    await sign_in(client, admin)
    form = await client.get("/console/catalogues/recipient?key=maximizer", headers=HTML)
    assert form.status_code == 200 and 'value="maximizer"' in form.text
    for csrf in ("", "forged"):
        r = await client.post(
            "/console/catalogues/recipient",
            content=_form(csrf=csrf, step="save", **_maximizer()),
            headers=FORM,
        )
        assert r.status_code == 403
    assert await _recipient_purposes(db, "maximizer") == ["partner_referral"]


async def test_the_models_refusal_shows_on_the_page_and_keeps_nothing(client, admin, db):
    before = await _audits(db, "purposes.put")
    for step in ("preview", "save"):
        r = await client.post(
            "/console/catalogues/purpose",
            content=_form(
                step=step, key="surveys", description="Surveys", consent_valid_months="0"
            ),
            headers=admin | FORM,
        )
        assert r.status_code == 422
        assert 'role="alert"' in r.text and "allowed_bases" in r.text
        assert "consent_valid_months" in r.text
    bad_key = await client.post(
        "/console/catalogues/recipient",
        content=_form(step="save", **_maximizer(key="Not A Key", country="gb")),
        headers=admin | FORM,
    )
    assert bad_key.status_code == 422 and "country" in bad_key.text
    assert await _audits(db, "purposes.put") == before
    assert await _audits(db, "recipients.put") == 0


async def test_a_recipient_preview_counts_with_the_gate_and_keeps_nothing(client, admin, crm, db):
    sid = await _li_subject(client, crm)
    ask = {"subject_id": sid, "purpose": "surveys", "recipient": "maximizer"}
    denied = (await client.post("/v1/decisions", json=ask, headers=crm)).json()
    assert denied["reasons"] == ["recipient_not_for_purpose"]
    r = await client.post(
        "/console/catalogues/recipient",
        content=_form(step="preview", **_maximizer()),
        headers=admin | FORM,
    )
    assert r.status_code == 200, r.text
    row = r.text.split('id="effects"')[1].split("surveys")[1].split("</tr>")[0]
    assert '<td class="to-allowed">1</td>' in row
    assert 'id="form-save"' in r.text and 'name="purposes" value="surveys"' in r.text
    assert await _recipient_purposes(db, "maximizer") == ["partner_referral"]
    assert await _audits(db, "recipients.put") == 0
    still = (await client.post("/v1/decisions", json=ask, headers=crm)).json()
    assert still["allowed"] is False


async def test_saving_a_recipient_writes_the_row_and_the_audit_entry(client, admin, crm, db):
    sid = await _li_subject(client, crm)
    r = await client.post(
        "/console/catalogues/recipient",
        content=_form(step="save", **_maximizer()),
        headers=admin | FORM,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/catalogues?done=recipient"
    assert await _recipient_purposes(db, "maximizer") == ["partner_referral", "surveys"]
    entry = (
        await db.execute(select(AuditEntry).where(AuditEntry.action == "recipients.put"))
    ).scalar_one()
    assert entry.entity_id == "maximizer" and entry.actor_role == "admin"
    ask = {"subject_id": sid, "purpose": "surveys", "recipient": "maximizer"}
    assert (await client.post("/v1/decisions", json=ask, headers=crm)).json()["allowed"]
    done = await client.get("/console/catalogues?done=recipient", headers=admin | HTML)
    assert 'id="done"' in done.text


async def test_a_purposes_new_bases_preview_the_denials(client, admin, crm, db):
    await _li_subject(client, crm, "surveys")
    r = await client.post(
        "/console/catalogues/purpose",
        content=_form(
            step="preview",
            key="surveys",
            description="Surveys through SurveyMonkey",
            allowed_bases="consent",
        ),
        headers=admin | FORM,
    )
    assert r.status_code == 200, r.text
    to_denied = int(r.text.split('class="to-denied">')[1].split("<")[0])
    assert to_denied >= 1
    allowed = await db.execute(text("SELECT allowed_bases FROM purposes WHERE key = 'surveys'"))
    assert allowed.scalar_one() == ["consent", "legitimate_interests"]


@pytest.mark.parametrize(
    ("kind", "fields", "shown"),
    [
        (
            "policy",
            {"version": "v-preview", "text_sha256": "a" * 64, "reconsent_purposes": "surveys"},
            'id="effects"',
        ),
        ("retention", {"key": "prospect", "rule": "fixed_period", "months": "1"}, 'id="impact"'),
        (
            "controller",
            {
                "name": "Preview Ltd",
                "email": "privacy@example.com",
                "address": "1 High Street, London",
                "supervisory_authority": "ICO",
            },
            "Preview Ltd",
        ),
    ],
)
async def test_other_previews_keep_nothing(client, admin, db, kind, fields, shown):
    counted = text("SELECT count(*) FROM audit_entries")
    before = (await db.execute(counted)).scalar_one()
    r = await client.post(
        f"/console/catalogues/{kind}", content=_form(step="preview", **fields), headers=admin | FORM
    )
    assert r.status_code == 200, r.text
    assert shown in r.text and 'id="form-save"' in r.text
    assert (await db.execute(counted)).scalar_one() == before
    policies = await db.execute(text("SELECT count(*) FROM policies WHERE version = 'v-preview'"))
    assert policies.scalar_one() == 0
    page = await client.get("/console/catalogues", headers=admin | HTML)
    assert "Preview Ltd" not in page.text


async def test_saving_the_controller_goes_through_its_service(client, admin, db):
    fields = {
        "name": f"Saved {uuid.uuid4().hex[:6]} Ltd",
        "email": "privacy@example.com",
        "address": "1 High Street, London",
        "supervisory_authority": "ICO",
    }
    r = await client.post(
        "/console/catalogues/controller", content=_form(step="save", **fields), headers=admin | FORM
    )
    assert r.status_code == 303
    shown = (await client.get("/v1/controller", headers=admin)).json()
    assert shown["name"] == fields["name"] and shown["dpo_email"] is None
    assert await _audits(db, "controller.put") == 1
