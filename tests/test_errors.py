"""Every error is an RFC 9457 problem document; nothing private leaks into responses or logs."""

import json
import logging

from tests.conftest import new_subject


def assert_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:consent-api:problem:")
    assert body["title"]
    return body


async def test_unknown_route_and_wrong_method(client, crm):
    assert_problem(await client.get("/v1/nothing-here", headers=crm), 404)
    assert_problem(await client.delete("/v1/purposes", headers=crm), 405)


async def test_malformed_json_is_422_problem(client, crm):
    r = await client.post(
        "/v1/subjects",
        content=b'{"email": "a@b.com",',
        headers={**crm, "content-type": "application/json"},
    )
    body = assert_problem(r, 422)
    assert body["type"].endswith("validation-error")


async def test_oversized_body_is_413_by_length_and_by_stream(client, crm, test_settings):
    big = b'{"name": "' + b"x" * (test_settings.max_body_bytes + 10) + b'"}'
    headers = {**crm, "content-type": "application/json"}
    assert_problem(await client.post("/v1/subjects", content=big, headers=headers), 413)

    async def chunks():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    # A streamed body carries no Content-Length: the middleware counts it.
    r = await client.post("/v1/subjects", content=chunks(), headers=headers)
    assert_problem(r, 413)


async def test_validation_errors_do_not_echo_input(client, crm):
    secret = "secret-value-1234@nowhere"
    r = await client.post("/v1/subjects", json=new_subject(email=secret), headers=crm)
    assert_problem(r, 422)
    assert secret not in r.text


async def test_unexpected_error_is_a_bare_500_problem(app, client, crm, caplog):
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("SELECT secret FROM subjects WHERE email='leak@example.com'")

    with caplog.at_level(logging.INFO):
        r = await client.get("/boom", headers=crm)
    body = assert_problem(r, 500)
    assert "leak@example.com" not in r.text and "SELECT" not in r.text
    assert body["title"] == "Internal server error"
    logged = " ".join(
        rec.getMessage() + json.dumps(rec.__dict__, default=str) for rec in caplog.records
    )
    assert "leak@example.com" not in logged and "Traceback" not in logged
    assert any(getattr(rec, "error_class", None) == "RuntimeError" for rec in caplog.records)


async def test_logs_carry_request_id_and_no_personal_data(client, crm, caplog):
    email = "private.person@example.com"
    with caplog.at_level(logging.INFO):
        r = await client.get(
            "/v1/subjects", params={"email": email}, headers={**crm, "x-request-id": "req-123"}
        )
        await client.post(
            "/v1/subjects", json=new_subject(email=email, name="Private Name"), headers=crm
        )
    assert r.headers["x-request-id"] == "req-123"
    access = [rec for rec in caplog.records if rec.name == "consent_api.access"]
    assert any(getattr(rec, "route", None) == "/v1/subjects" for rec in access)
    from app.core.observability import JsonFormatter

    formatter = JsonFormatter()
    ours = [rec for rec in caplog.records if rec.name.startswith("consent_api")]
    text = "\n".join(formatter.format(rec) for rec in ours)
    assert email not in text and "Private Name" not in text
    assert '"request_id": "req-123"' in text
