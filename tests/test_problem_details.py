"""What a problem says: an unknown catalogue key comes with the keys there are (and nothing
else of the catalogue); a body that is not JSON is placed by line and column, on FastAPI's
routes and on the direct ones alike."""

from sqlalchemy import text

from tests.conftest import new_subject
from tests.test_consent import give
from tests.test_errors import assert_problem

KEYS = {
    "purposes": "SELECT key FROM purposes ORDER BY key",
    "recipients": "SELECT key FROM recipients ORDER BY key",
    "policy versions": "SELECT version FROM policies ORDER BY version",
    "categories": "SELECT key FROM categories ORDER BY key",
    "sources": "SELECT key FROM sources ORDER BY key",
}


async def _lists_the_keys(db, r, status, listing, refused, field=None):
    body = assert_problem(r, status)
    keys = list((await db.execute(text(KEYS[listing]))).scalars())
    assert keys, listing
    assert body["detail"] == f"Unknown {refused}; known {listing}: {', '.join(keys)}."
    assert body["known"] == keys
    assert body.get("field") == field
    return body


async def _subject(client, crm):
    return (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]


async def test_subject_category_and_source(client, crm, db):
    r = await client.post("/v1/subjects", json=new_subject(category="customer"), headers=crm)
    await _lists_the_keys(db, r, 422, "categories", "category `customer`", "category")
    r = await client.post("/v1/subjects", json=new_subject(source="fax"), headers=crm)
    await _lists_the_keys(db, r, 422, "sources", "source `fax`", "source")
    sid = await _subject(client, crm)
    r = await client.patch(f"/v1/subjects/{sid}", json={"category": "vip"}, headers=crm)
    await _lists_the_keys(db, r, 422, "categories", "category `vip`", "category")
    # What is not a key is not echoed: it may be anything, personal data included.
    r = await client.post("/v1/subjects", json=new_subject(source="Jane Doe"), headers=crm)
    await _lists_the_keys(db, r, 422, "sources", "source `?`", "source")
    assert "Jane" not in r.text


async def test_decisions_and_consent_events_on_the_hot_paths(client, crm, db):
    sid = await _subject(client, crm)
    r = await client.post(
        "/v1/decisions", json={"subject_id": sid, "purpose": "telepathy"}, headers=crm
    )
    body = await _lists_the_keys(db, r, 422, "purposes", "purpose `telepathy`", "purpose")
    described = (await db.execute(text("SELECT description FROM purposes LIMIT 1"))).scalar_one()
    assert described not in body["detail"]  # keys only
    r = await client.post(
        "/v1/decisions",
        json={"subject_id": sid, "purpose": "surveys", "recipient": "acme"},
        headers=crm,
    )
    await _lists_the_keys(db, r, 422, "recipients", "recipient `acme`", "recipient")
    r = await client.post(
        "/v1/decisions/batch", json={"purpose": "nope", "subjects": [sid]}, headers=crm
    )
    await _lists_the_keys(db, r, 422, "purposes", "purpose `nope`", "purpose")
    r = await client.post("/v1/consent-events", json=give(sid, policy_version="9.9"), headers=crm)
    await _lists_the_keys(db, r, 422, "policy versions", "policy version `9.9`", "policy_version")
    r = await client.post("/v1/consent-events", json=give(sid, purpose="telepathy"), headers=crm)
    await _lists_the_keys(db, r, 422, "purposes", "purpose `telepathy`", "purpose")
    transfer = give(sid, purpose="international_transfer", recipient="nobody")
    r = await client.post("/v1/consent-events", json=transfer, headers=crm)
    await _lists_the_keys(db, r, 422, "recipients", "recipient `nobody`", "recipient")


async def test_paths_and_lists_of_keys(client, crm, admin, db):
    sid = await _subject(client, crm)
    r = await client.put(
        f"/v1/subjects/{sid}/bases/telepathy", json={"basis": "consent"}, headers=crm
    )
    await _lists_the_keys(db, r, 404, "purposes", "purpose `telepathy`")
    r = await client.get("/v1/retention-rules/vip", headers=crm)
    await _lists_the_keys(db, r, 404, "categories", "category `vip`")
    r = await client.put(
        "/v1/recipients/faraway",
        json={
            "name": "Far Away Inc",
            "role": "processor",
            "country": "US",
            "inside_eea_uk": False,
            "purposes": ["surveys", "zzz", "aaa"],
        },
        headers=admin,
    )
    await _lists_the_keys(db, r, 422, "purposes", "purposes `aaa`, `zzz`", "purposes")
    r = await client.get(f"/v1/subjects/{sid}/consent-proof?purpose=telepathy", headers=crm)
    await _lists_the_keys(db, r, 422, "purposes", "purpose `telepathy`", "purpose")


MALFORMED = b'{\n  "subject_id": "a@b.example",\n  "purpose" "surveys"\n}'


async def test_malformed_json_is_placed_by_line_and_column(client, crm):
    """Line 3, column 13: where the colon is missing. The body itself is never echoed."""
    headers = {**crm, "content-type": "application/json"}
    answers = [
        await client.post(path, content=MALFORMED, headers=headers)
        for path in ("/v1/subjects", "/v1/decisions", "/v1/consent-events", "/v1/rights-requests")
    ]
    for r in answers:
        body = assert_problem(r, 422)
        assert body["type"].endswith("validation-error")
        assert body["detail"] == "The body is not valid JSON at line 3, column 13."
        assert "a@b.example" not in r.text
    truncated = await client.post(
        "/v1/decisions", content=b'{"purpose": "surveys",', headers=headers
    )
    assert assert_problem(truncated, 422)["detail"].endswith("line 1, column 23.")
