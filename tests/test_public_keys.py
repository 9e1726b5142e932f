"""The public signing keys answer without an API key, by declaration (app.core.guard's
PUBLIC_PATHS, app.routers.keys), and `consent-api verify-receipt` verifies real receipts and
proofs against them offline: a good one passes; a tampered one, one signed with a key the
JWKS does not hold, and malformed input each fail with one line and exit 1."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from joserfc import jws
from joserfc.jwk import ECKey

from app.core.guard import PUBLIC_PATHS, is_public
from app.main import create_app
from app.routers import keys as keys_router
from tests.conftest import new_subject
from tests.routes import all_routes
from tests.test_consent import give

ROOT = Path(__file__).resolve().parents[1]
JOSE = {"Accept": "application/jose"}


async def test_both_addresses_answer_the_jwks_without_a_key(client, auditor):
    first = await client.get("/v1/keys")
    second = await client.get("/.well-known/jwks.json")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.headers["cache-control"] == "public, max-age=300"
    assert first.headers["content-type"] == "application/json"
    jwks = first.json()
    assert jwks["keys"] and all(k["kty"] == "EC" and k["alg"] == "ES256" for k in jwks["keys"])
    assert not any("d" in k for k in jwks["keys"])  # nothing private
    # A key, even a wrong one, changes nothing: the answer is the same for everyone.
    assert (await client.get("/v1/keys", headers={"Authorization": "Bearer cak_x"})).json() == jwks
    assert (await client.get("/v1/keys", headers=auditor)).json() == jwks


async def test_only_those_two_paths_are_open(client):
    for path in ("/v1/keys/extra", "/v1/keysX", "/v1/key", "/.well-known/other.json"):
        r = await client.get(path)
        assert r.status_code == 401, (path, r.status_code)
    assert (await client.post("/v1/keys")).status_code == 405


def test_the_public_keys_are_public_by_declaration(test_settings):
    """The router's paths are exactly the guard's public paths, and no API router serves
    them: the guard, app.core.auth_first and the route agree."""
    app = create_app(test_settings)
    served = {r.path for r in keys_router.router.routes}
    assert served == set(PUBLIC_PATHS) == {"/v1/keys", "/.well-known/jwks.json"}
    assert all(is_public(p) for p in served)
    for route in all_routes(app):
        if route.path in served:
            assert not getattr(route, "dependencies", None), route.path


# --- consent-api verify-receipt ---


def verify(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a person runs it: no CONSENT_ settings at all, and in a production
    environment without its secrets (it reads none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_ENV"] = "production"
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "verify-receipt", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def failed_with(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("consent-api: invalid: "), result.stderr
    assert words in lines[0], lines[0]
    assert result.stdout == ""


async def _receipt(client, crm) -> tuple[str, dict]:
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    event = await client.post("/v1/consent-events", json=give(sid), headers=crm)
    assert event.status_code == 201, event.text
    r = await client.get(
        f"/v1/consent-events/{event.json()['id']}/receipt", headers={**crm, **JOSE}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/jose")
    return r.text, event.json()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["collectionMethod"] = "phone"  # was web_form
    return ".".join((header, _b64(json.dumps(claims).encode()), signature))


def _signed_elsewhere(token: str, kid: str | None = None) -> str:
    """The same claims signed with a key the service never had (as `kid`, or its own id)."""
    _, payload, _ = token.split(".")
    claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    stranger = ECKey.generate_key("P-256", private=True)
    header = {"alg": "ES256", "kid": kid or stranger.thumbprint()}
    return jws.serialize_compact(header, claims, stranger, algorithms=["ES256"])


async def test_a_real_receipt_verifies_and_altered_ones_fail(client, crm, tmp_path):
    token, event = await _receipt(client, crm)
    jwks = (await client.get("/v1/keys")).json()
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    (tmp_path / "receipt.jws").write_text(token + "\n")
    ok = verify(str(tmp_path / "receipt.jws"), "--jwks", str(tmp_path / "jwks.json"))
    assert ok.returncode == 0, ok.stderr
    verdict, claims = ok.stdout.split("\n", 1)
    assert verdict.startswith(f"valid consent receipt {event['id']} (subject")
    assert "content_subscriptions" in verdict and jwks["keys"][0]["kid"] in verdict
    claims = json.loads(claims)
    assert claims["consentReceiptID"] == event["id"] and claims["collectionMethod"] == "web_form"
    assert claims["iso27560"]["notice"]["sha256"] == event["notice_sha256"]

    jwks_arg = ("--jwks", str(tmp_path / "jwks.json"))
    failed_with(verify("-", *jwks_arg, stdin=_tampered(token)), "bad signature")
    failed_with(verify("-", *jwks_arg, stdin=_signed_elsewhere(token)), "unknown key id")
    own_kid = jwks["keys"][0]["kid"]
    failed_with(verify("-", *jwks_arg, stdin=_signed_elsewhere(token, own_kid)), "bad signature")
    failed_with(verify("-", *jwks_arg, stdin="not a receipt"), "malformed")
    failed_with(verify("-", *jwks_arg, stdin=token[:-8]), "bad signature")
    unsigned = (await client.get(f"/v1/consent-events/{event['id']}/receipt", headers=crm)).text
    failed_with(verify("-", *jwks_arg, stdin=unsigned), "unsigned receipt")


async def test_a_consent_proof_verifies_and_an_altered_one_fails(client, crm, auditor, tmp_path):
    _, event = await _receipt(client, crm)
    sid = event["subject_id"]
    withdraw = {"subject_id": sid, "purpose": "content_subscriptions", "action": "withdrawn"}
    assert (await client.post("/v1/consent-events", json=withdraw, headers=crm)).status_code == 201
    proof = (await client.get(f"/v1/subjects/{sid}/consent-proof", headers=auditor)).json()
    assert proof["complete"] is True
    (tmp_path / "jwks.json").write_text((await client.get("/.well-known/jwks.json")).text)
    jwks_arg = ("--jwks", str(tmp_path / "jwks.json"))
    ok = verify("-", *jwks_arg, stdin=json.dumps(proof))
    assert ok.returncode == 0, ok.stderr
    verdict, claims = ok.stdout.split("\n", 1)
    assert verdict.startswith(f"valid consent proof for subject {sid}: 2 receipt(s)")
    claims = json.loads(claims)
    assert [r["iso27560"]["state"] for r in claims["receipts"]] == ["given", "withdrawn"]
    assert claims["checkpoints"][-1]["position"] == proof["checkpoint"]["position"]

    altered = json.loads(json.dumps(proof))
    altered["events"][0]["receipt"]["collectionMethod"] = "phone"
    failed_with(verify("-", *jwks_arg, stdin=json.dumps(altered)), "differs from its signed copy")
    altered = json.loads(json.dumps(proof))
    altered["audit_entries"][0]["entry"]["action"] = "consent.withdrawn"
    failed_with(verify("-", *jwks_arg, stdin=json.dumps(altered)), "was altered")
    altered = json.loads(json.dumps(proof))
    altered["checkpoints"][-1]["head_hash"] = "0" * 64
    failed_with(verify("-", *jwks_arg, stdin=json.dumps(altered)), "differ from what was signed")


async def test_the_jwks_is_fetched_from_the_service(live_server, tmp_path):
    crm = await live_server.key("crm")
    async with live_server.client() as http:
        token, event = await _receipt(http, crm)
    (tmp_path / "receipt.jws").write_text(token)
    ok = verify(str(tmp_path / "receipt.jws"), "--url", live_server.url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"valid consent receipt {event['id']}")
    failed_with(verify("-", "--url", live_server.url, stdin=_tampered(token)), "bad signature")
    nowhere = verify(str(tmp_path / "receipt.jws"), "--url", live_server.url + "/nowhere/")
    assert nowhere.returncode == 1 and "HTTP 401" in nowhere.stderr  # not the JWKS: refused
    assert len(nowhere.stderr.strip().splitlines()) == 1
