"""A query parameter an endpoint does not know is a 422 problem naming it (API.md), on
FastAPI's routes, the direct routes and the auditor's pages alike, before anything is
stored; the MailChimp webhook and the person's pages take parameters of their own."""

import uuid

from sqlalchemy import text

from app.core import query_params
from app.main import QUERY_EXEMPT_ROUTERS
from tests.conftest import new_subject
from tests.test_consent import give
from tests.test_errors import assert_problem


def _unknown(r, name):
    body = assert_problem(r, 422)
    assert body["type"].endswith("validation-error")
    assert f"'{name}'" in body["detail"]
    assert body["errors"][0]["loc"] == ["query", name]
    return body


async def test_a_regular_route_names_the_parameter_and_what_it_accepts(client, crm):
    body = _unknown(await client.get("/v1/rights-requests?subjectid=x", headers=crm), "subjectid")
    assert body["detail"] == (
        "unknown query parameter 'subjectid'; accepted: "
        "status, type, subject_id, overdue, paused, limit, cursor"
    )
    assert body["accepted"] == sorted(
        ["status", "type", "subject_id", "overdue", "paused", "limit", "cursor"]
    )
    # Declared ones, repeated or blank, still pass; several unknown ones are all named.
    assert (await client.get("/v1/rights-requests?status=received&limit=5", headers=crm)).is_success
    two = await client.get("/v1/purposes?limit=5&a=1&b=2&a=3", headers=crm)
    assert "unknown query parameters 'a', 'b'; accepted: limit, cursor" in two.json()["detail"]
    none = await client.post(f"/v1/rights-requests/{uuid.uuid4()}/resume?x=1", headers=crm)
    assert _unknown(none, "x")["detail"].endswith("this endpoint takes none")


async def test_a_parameter_name_that_is_not_one_is_not_echoed(client, crm):
    r = await client.get("/v1/subjects", params={"jane.doe@example.com": "1"}, headers=crm)
    body = assert_problem(r, 422)
    assert "jane.doe@example.com" not in r.text and "'?'" in body["detail"]


async def test_the_direct_routes_refuse_it_before_anything_is_stored(client, crm, db):
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    decision = await client.post(
        "/v1/decisions?dry_run=true", json={"subject_id": sid, "purpose": "surveys"}, headers=crm
    )
    _unknown(decision, "dry_run")
    _unknown(await client.get(f"/v1/subjects/{sid}?fields=email", headers=crm), "fields")
    notice = f"notice {uuid.uuid4()}"
    event = await client.post(
        "/v1/consent-events?confirm=1", json=give(sid, notice_text=notice), headers=crm
    )
    _unknown(event, "confirm")
    email = f"typo-{uuid.uuid4().hex[:8]}@example.com"
    created = await client.post("/v1/subjects?upsert=1", json=new_subject(email=email), headers=crm)
    _unknown(created, "upsert")
    counts = await db.execute(
        text(
            "SELECT (SELECT count(*) FROM decisions WHERE subject_id = :s),"
            " (SELECT count(*) FROM consent_events WHERE subject_id = :s),"
            " (SELECT count(*) FROM subjects WHERE email = :e)"
        ),
        {"s": sid, "e": email},
    )
    assert tuple(counts.one()) == (0, 0, 0)


async def test_the_auditor_pages_refuse_it_too(client, auditor):
    _unknown(await client.get("/v1/reports/overview?month=3", headers=auditor), "month")
    _unknown(await client.get("/v1/reports/processing-activities?lang=en", headers=auditor), "lang")
    assert (await client.get("/auditor/login?next=/v1/reports/overview")).status_code == 200
    _unknown(await client.get("/auditor/login?nxt=/v1/reports/overview"), "nxt")


async def test_who_you_are_comes_before_what_you_sent(client, crm):
    wrong = {"Authorization": "Bearer cak_" + "x" * 40}
    assert_problem(await client.get("/v1/rights-requests?subjectid=x", headers=wrong), 401)
    assert_problem(await client.get("/v1/rights-requests?subjectid=x"), 401)
    assert_problem(await client.get("/v1/nothing-here?x=1", headers=crm), 404)
    assert_problem(await client.delete("/v1/purposes?x=1", headers=crm), 405)


async def test_mailchimp_and_the_person_pages_take_their_own(client, crm):
    webhook = "/v1/webhooks/mailchimp?secret=test-webhook-secret&utm_source=mc&list=1"
    assert (await client.get(webhook)).status_code == 200
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    links = (await client.post(f"/v1/subjects/{sid}/links", json={}, headers=crm)).json()
    for url in (links["unsubscribe_url"], links["preference_url"]):
        path = "/" + url.split("/", 3)[3]
        r = await client.get(f"{path}?utm_source=newsletter&done=optout")
        assert r.status_code == 200, (path, r.text[:200])


def test_what_each_route_accepts_is_what_the_openapi_document_says(app):
    """Read from the same dependants: the check cannot drift from the contract."""
    spec = app.openapi()
    exempt = set(query_params.exempt_endpoints(*QUERY_EXEMPT_ROUTERS))
    checked = 0
    for route in query_params._routes(app):
        operations = spec["paths"].get(route.path_format, {})
        for method in route.methods or ():
            op = operations.get(method.lower())
            if op is None or route.endpoint in exempt:
                continue
            documented = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            assert set(query_params.declared_query(route)) == documented, route.path_format
            checked += 1
    assert checked > 50


def test_the_names_are_read_as_starlette_reads_them():
    from urllib.parse import parse_qsl

    for query in (b"a%20b=1&c+d=2&=x&&e", b"caf%C3%A9=1", b"a=1;b=2", b"%zz=1", b"\xe9=1"):
        starlette = [k for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
        assert query_params.query_keys(query) == [k for k in starlette if k]
