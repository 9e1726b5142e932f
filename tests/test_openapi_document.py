"""What the OpenAPI document tells a client beyond paths and shapes: which operations take
the bearer key (checked against API.md's role table in tests/access_table.py, not against
the code that writes it), and that fields accepting a date say so (and still parse both)."""

import json
from datetime import UTC, datetime

from sqlalchemy import text

from app.core.guard import SELF_AUTHENTICATING
from app.openapi_export import render_openapi
from tests.access_table import ACCESS, OWN_CREDENTIAL, PUBLIC
from tests.conftest import new_subject

BEARER = [{"bearerAuth": []}]
DATE_OR_DATE_TIME = [
    {"type": "string", "format": "date"},
    {"type": "string", "format": "date-time"},
    {"type": "null"},
]
# Input fields whose validators take a date or a date-time (app.models.base).
DATE_FIELDS = {
    ("LawfulBasisSet", "contract_start"),
    ("LawfulBasisSet", "contract_end"),
    ("SubjectUpdate", "interest_ceased_at"),
    ("RightsRequestCreate", "received_at"),
}


def _spec(app):
    return json.loads(render_openapi(app))


def test_the_bearer_scheme_is_declared(app):
    schemes = _spec(app)["components"]["securitySchemes"]
    assert schemes == {
        "bearerAuth": {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"},
    }
    assert "security" not in _spec(app)  # per operation: public ones carry none


def test_every_keyed_operation_and_no_public_one_declares_it(app):
    wrong = []
    for path, methods in _spec(app)["paths"].items():
        for method, op in methods.items():
            rule = ACCESS[(method.upper(), path)]
            keyless = rule in (PUBLIC, OWN_CREDENTIAL)
            expected = None if keyless else BEARER
            if path in SELF_AUTHENTICATING:
                expected = [*BEARER, {}]  # a key, or none: the page's sign-in form
            if op.get("security") != expected:
                wrong.append((method.upper(), path, op.get("security")))
    assert wrong == []
    paths = _spec(app)["paths"]
    for public in ("/healthz", "/readyz", "/v1/keys", "/.well-known/jwks.json", "/u/{token}"):
        assert "security" not in paths[public]["get"], public
    assert "security" not in paths["/v1/webhooks/mailchimp"]["post"]  # its own `secret`
    assert paths["/v1/purposes"]["get"]["security"] == BEARER
    # A key, or a page session (none on the request: the sign-in form answers).
    assert paths["/v1/reports/overview"]["get"]["security"] == [*BEARER, {}]


def test_date_fields_accept_a_date_or_a_date_time(app):
    schemas = _spec(app)["components"]["schemas"]
    found = {
        (name, field)
        for name, schema in schemas.items()
        for field, prop in schema.get("properties", {}).items()
        if any(option.get("format") == "date" for option in prop.get("anyOf", []))
    }
    assert found == DATE_FIELDS
    for name, field in DATE_FIELDS:
        assert schemas[name]["properties"][field]["anyOf"] == DATE_OR_DATE_TIME, (name, field)
    # Answers always carry a date-time.
    public = schemas["LawfulBasisPublic"]["properties"]["contract_end"]["anyOf"]
    assert public == [{"type": "string", "format": "date-time"}, {"type": "null"}]


async def _one(db, sql, **params):
    return (await db.execute(text(sql), params)).one()


async def test_the_server_still_reads_both_forms(client, crm, db):
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    basis = {"basis": "contract", "contract_ref": "C-1", "contract_end": "2027-01-31"}
    r = await client.put(f"/v1/subjects/{sid}/bases/account_management", json=basis, headers=crm)
    assert r.status_code in (200, 201), r.text
    row = await _one(db, "SELECT contract_end FROM lawful_bases WHERE subject_id = :s", s=sid)
    assert row.contract_end == datetime(2027, 2, 1, 0, 0, tzinfo=UTC)  # through 31 Jan, UK
    r = await client.patch(
        f"/v1/subjects/{sid}", json={"interest_ceased_at": "2026-03-01T09:30:00Z"}, headers=crm
    )
    assert r.status_code == 200, r.text
    row = await _one(db, "SELECT interest_ceased_at FROM subjects WHERE id = :s", s=sid)
    assert row.interest_ceased_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    body = {"type": "access", "subject_id": sid, "received_at": "2026-01-05"}
    r = await client.post("/v1/rights-requests", json=body, headers=crm)
    assert r.status_code == 201, r.text
    row = await _one(db, "SELECT received_at FROM rights_requests WHERE id = :i", i=r.json()["id"])
    assert row.received_at == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # midnight, UK (GMT)
