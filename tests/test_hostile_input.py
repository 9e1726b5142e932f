"""Hostile input (issue 14): each case is a 4xx problem document and stores nothing."""

import uuid

import pytest
from sqlalchemy import text

from tests.conftest import new_subject
from tests.test_consent import give


async def _count(db, table: str) -> int:
    return (await db.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()


def _problem(r, status=None):
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


@pytest.mark.parametrize(
    "name",
    [
        "Ada\x1b[31m Lovelace",  # terminal escape
        "Ada\nLovelace",  # a forged log or CSV line
        "Ada\r\nX-Injected: 1",
        "Ada \u202eecalevoL",  # right-to-left override
        "Ada\u2066Lovelace\u2069",  # bidi isolate
        "Ada\u200bLovelace",  # zero-width space
        "Ada\ufeff",  # BOM
        "Ada\u2028Lovelace",  # line separator
        "Ada\x00",
    ],
)
async def test_names_with_control_bidi_or_invisible_characters_are_refused(client, crm, db, name):
    before = await _count(db, "subjects")
    body = _problem(
        await client.post("/v1/subjects", json=new_subject(name=name), headers=crm), 422
    )
    assert name not in str(body)
    assert await _count(db, "subjects") == before


async def test_joiners_that_scripts_need_are_kept(client, crm):
    name = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # Persian, with a ZWNJ
    r = await client.post("/v1/subjects", json=new_subject(name=name), headers=crm)
    assert r.status_code == 201 and r.json()["name"] == name


async def test_an_address_may_span_lines_but_not_carry_controls(client, crm):
    ok = await client.post(
        "/v1/subjects", json=new_subject(business_address="1 Road\nBedford"), headers=crm
    )
    assert ok.status_code == 201
    _problem(
        await client.post(
            "/v1/subjects", json=new_subject(business_address="1 Road\r\nBedford"), headers=crm
        ),
        422,
    )


@pytest.mark.parametrize(
    "email",
    [
        "x" * 65 + "@example.com",
        "Ada Lovelace <ada@example.com>",
        "<ada@example.com>",
        "ada@@example.com",
        "ada@example..com",
        "ada\u202e@example.com",
        "ada @example.com",
    ],
)
async def test_malformed_emails_are_refused(client, crm, db, email):
    before = await _count(db, "subjects")
    body = _problem(
        await client.post("/v1/subjects", json=new_subject(email=email), headers=crm), 422
    )
    assert email not in str(body)
    assert await _count(db, "subjects") == before


async def test_a_64_character_local_part_and_an_idn_domain_are_fine(client, crm):
    for email in (
        "x" * 64 + f"{uuid.uuid4().hex[:0]}@example.com",
        f"a{uuid.uuid4().hex[:6]}@bücher.de",
    ):
        r = await client.post("/v1/subjects", json=new_subject(email=email), headers=crm)
        assert r.status_code == 201, (email, r.text)


async def test_numbers_are_not_times_or_booleans(client, crm, admin, db):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    before = await _count(db, "consent_events")
    _problem(
        await client.post("/v1/consent-events", json=give(s["id"], occurred_at=0), headers=crm), 422
    )
    _problem(
        await client.post(
            "/v1/rights-requests",
            json={"type": "access", "subject_id": s["id"], "received_at": "1900-01-01T00:00:00Z"},
            headers=crm,
        ),
        422,
    )
    assert await _count(db, "consent_events") == before
    purpose = {"description": "d", "allowed_bases": ["consent"], "direct_marketing": 0}
    _problem(await client.put("/v1/purposes/fuzzed_purpose", json=purpose, headers=admin), 422)


async def test_deep_and_huge_json_is_refused(client, crm, test_settings):
    headers = {**crm, "content-type": "application/json"}
    deep = b"[" * 200_000 + b"]" * 200_000
    _problem(await client.post("/v1/subjects", content=deep, headers=headers))
    nested = b'{"name": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"
    _problem(await client.post("/v1/subjects", content=nested, headers=headers))

    async def chunks():
        for _ in range(test_settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    _problem(await client.post("/v1/subjects", content=chunks(), headers=headers), 413)


async def test_an_anonymous_body_is_not_read(client):
    r = await client.post(
        "/v1/subjects", content=b"{" * 500_000, headers={"content-type": "application/json"}
    )
    _problem(r, 401)


async def test_wrong_content_types_are_415_and_wrong_methods_405_with_allow(client, crm):
    for media_type in ("text/plain", "application/xml", "multipart/form-data; boundary=x"):
        r = await client.post(
            "/v1/subjects", content=b"email=a@b.c", headers={**crm, "content-type": media_type}
        )
        _problem(r, 415)
    r = await client.delete("/v1/purposes", headers=crm)
    _problem(r, 405)
    assert r.headers["allow"] == "GET"


async def test_odd_ids_cursors_limits_and_query_parameters(client, crm, auditor):
    cases = [
        client.get("/v1/subjects/not-a-uuid", headers=crm),
        client.get("/v1/subjects/..%2F..%2Fetc%2Fpasswd", headers=crm),
        client.get("/v1/subjects", params={"limit": 10**9}, headers=crm),
        client.get("/v1/subjects", params={"limit": -1}, headers=crm),
        client.get("/v1/subjects", params={"cursor": "!!!not-base64"}, headers=crm),
        client.get("/v1/audit/events", params={"cursor": "eyJ4IjogMX0"}, headers=auditor),
        client.get("/v1/opt-outs/check?email=a@b.com&email=<x>", headers=crm),
        client.get("/v1/changes", params={"after": "-1"}, headers=auditor),
    ]
    for case in cases:
        r = await case
        _problem(r)


async def test_answers_say_nosniff_and_no_store(client, crm):
    r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    r = await client.get(f"/v1/subjects/{r.json()['id']}", headers=crm)
    assert r.headers["cache-control"] == "no-store"
    assert "server" not in r.headers or "uvicorn" not in r.headers["server"]


async def test_a_body_of_unknown_keys_gets_a_short_answer(client, crm, db):
    body = new_subject()
    body.update({f"k{i}": i for i in range(60_000)})
    body["x" * 5000] = 1
    before = await _count(db, "subjects")
    r = await client.post("/v1/subjects", json=body, headers=crm)
    problem = _problem(r, 422)
    assert len(r.content) < 10_000
    assert problem["errors_total"] >= 60_000 and len(problem["errors"]) <= 20
    assert await _count(db, "subjects") == before
