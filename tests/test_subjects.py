"""Subjects: creation, data minimisation, uniqueness, listing, updates."""

import uuid

from sqlalchemy import func, select, text

from app.models.audit import AuditEntry
from app.models.subject import Subject
from tests.conftest import new_subject


async def test_create_normalises_email_and_stores_the_row(client, crm, db):
    body = new_subject(email="  Grace.Hopper@Example.COM ", phone="+44-(0)1234-214004")
    r = await client.post("/v1/subjects", json=body, headers=crm)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["email"] == "grace.hopper@example.com"
    assert out["status"] == "active"
    row = await db.get(Subject, uuid.UUID(out["id"]))
    assert row is not None and row.email == "grace.hopper@example.com"
    assert row.phone == "+44-(0)1234-214004"


async def test_extra_personal_field_is_rejected_and_nothing_stored(client, crm, db):
    before = (await db.execute(select(func.count()).select_from(Subject))).scalar_one()
    body = new_subject(date_of_birth="1990-01-01")
    r = await client.post("/v1/subjects", json=body, headers=crm)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert "date_of_birth" in problem["detail"]
    assert any(e["loc"] == ["body", "date_of_birth"] for e in problem["errors"])
    assert "1990-01-01" not in r.text  # the rejected value is not echoed
    after = (await db.execute(select(func.count()).select_from(Subject))).scalar_one()
    assert after == before


async def test_form_encoded_json_from_plain_curl_is_accepted(client, crm):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded.
    import json

    body = json.dumps(new_subject())
    headers = {**crm, "content-type": "application/x-www-form-urlencoded"}
    r = await client.post("/v1/subjects", content=body, headers=headers)
    assert r.status_code == 201, r.text


async def test_duplicate_email_is_409_with_existing_id(client, crm, db):
    body = new_subject()
    first = (await client.post("/v1/subjects", json=body, headers=crm)).json()
    dup = await client.post(
        "/v1/subjects", json={**body, "email": body["email"].upper()}, headers=crm
    )
    assert dup.status_code == 409
    assert dup.json()["existing_id"] == first["id"]
    count = await db.execute(
        select(func.count()).select_from(Subject).where(Subject.email == body["email"])
    )
    assert count.scalar_one() == 1


async def test_email_is_reusable_once_the_subject_is_erased(client, crm, db):
    body = new_subject()
    first = (await client.post("/v1/subjects", json=body, headers=crm)).json()
    await db.execute(
        text("UPDATE subjects SET erased_at = now() WHERE id = :id"), {"id": first["id"]}
    )
    await db.commit()
    again = await client.post("/v1/subjects", json=body, headers=crm)
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]


async def test_unknown_category_or_source_is_422_and_stores_nothing(client, crm, db):
    for field in ("category", "source"):
        body = new_subject(**{field: "no_such_thing"})
        r = await client.post("/v1/subjects", json=body, headers=crm)
        assert r.status_code == 422
        assert r.json()["field"] == field
        found = await db.execute(select(Subject).where(Subject.email == body["email"]))
        assert found.first() is None


async def test_invalid_values_are_422(client, crm):
    for bad in (
        {"email": "not-an-email"},
        {"phone": "call me maybe"},
        {"name": ""},
        {"name": "x" * 201},
    ):
        r = await client.post("/v1/subjects", json=new_subject(**bad), headers=crm)
        assert r.status_code == 422, bad


async def test_get_and_404(client, crm):
    created = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    r = await client.get(f"/v1/subjects/{created['id']}", headers=crm)
    assert r.status_code == 200 and r.json() == created
    missing = await client.get(f"/v1/subjects/{uuid.uuid4()}", headers=crm)
    assert missing.status_code == 404
    assert missing.json()["type"] == "urn:consent-api:problem:not-found"
    bad = await client.get("/v1/subjects/not-a-uuid", headers=crm)
    assert bad.status_code == 422


async def test_list_filters_and_paginates(client, crm):
    company = uuid.uuid4().hex
    ids = []
    for _ in range(5):
        body = new_subject(category="visitor", company=company)
        ids.append((await client.post("/v1/subjects", json=body, headers=crm)).json()["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"category": "visitor", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/subjects", params=params, headers=crm)).json()
        pages += 1
        seen += [s["id"] for s in page["items"] if s["company"] == company]
        assert all(s["category"] == "visitor" for s in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # creation order, nothing repeated or skipped
    assert pages >= 3
    by_email = await client.get("/v1/subjects", params={"email": "GRACE@example.com"}, headers=crm)
    assert by_email.status_code == 200


async def test_list_rejects_bad_cursor_and_limit(client, crm):
    assert (await client.get("/v1/subjects?cursor=!!!", headers=crm)).status_code == 422
    assert (await client.get("/v1/subjects?cursor=WzFd", headers=crm)).status_code == 422
    assert (await client.get("/v1/subjects?limit=1001", headers=crm)).status_code == 422
    assert (await client.get("/v1/subjects?limit=0", headers=crm)).status_code == 422


async def test_patch_updates_fields_and_interest_ceased_date(client, crm, db):
    created = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    r = await client.patch(
        f"/v1/subjects/{created['id']}",
        json={"job_title": "CTO", "interest_ceased_at": "2027-01-31"},
        headers=crm,
    )
    assert r.status_code == 200, r.text
    assert r.json()["job_title"] == "CTO"
    assert r.json()["interest_ceased_at"].startswith("2027-01-31T00:00:00")
    row = await db.get(Subject, uuid.UUID(created["id"]))
    await db.refresh(row)
    assert row.job_title == "CTO"


async def test_patch_rejects_extra_fields_taken_email_and_erased(client, crm, db):
    a = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    b = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    extra = await client.patch(f"/v1/subjects/{a['id']}", json={"salary": 1}, headers=crm)
    assert extra.status_code == 422 and "salary" in extra.json()["detail"]
    taken = await client.patch(f"/v1/subjects/{a['id']}", json={"email": b["email"]}, headers=crm)
    assert taken.status_code == 409 and taken.json()["existing_id"] == b["id"]
    null_email = await client.patch(f"/v1/subjects/{a['id']}", json={"email": None}, headers=crm)
    assert null_email.status_code == 422
    await db.execute(text("UPDATE subjects SET erased_at = now() WHERE id = :id"), {"id": a["id"]})
    await db.commit()
    erased = await client.patch(f"/v1/subjects/{a['id']}", json={"name": "X"}, headers=crm)
    assert erased.status_code == 409


async def test_writes_are_audited_without_personal_data(client, crm, db):
    body = new_subject(name="Unique Name Zebedee")
    created = (await client.post("/v1/subjects", json=body, headers=crm)).json()
    rows = (
        (await db.execute(select(AuditEntry).where(AuditEntry.entity_id == created["id"])))
        .scalars()
        .all()
    )
    assert [r.action for r in rows] == ["subject.create"]
    assert "name" in rows[0].digest["fields"]
    assert body["email"] not in str(rows[0].digest) and "Zebedee" not in str(rows[0].digest)
    assert rows[0].actor_role == "crm"
