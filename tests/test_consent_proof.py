"""Proof of consent: one document, verified here with the JWKS alone (PyJWT for the JWS,
hashlib for the chain), and failing verification when anything in it is altered."""

import hashlib
import json
from datetime import datetime

import jwt
import pytest

from tests.conftest import new_subject
from tests.test_consent import NOTICE, give


def _canonical(entry):
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_proof(doc, jwks):
    """Everything an auditor checks, from the document and the JWKS only. Raises on a fault."""
    keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks["keys"]}
    key = keys[doc["verification"]["key_id"]]
    for item in doc["events"]:
        payload = jwt.decode(item["receipt_jws"], key, algorithms=["ES256"])
        assert payload == item["receipt"], "receipt JWS does not match the receipt"
        assert item["receipt"]["consentReceiptID"] == item["event"]["id"]
        if item["notice"]:
            text = item["notice"]["text"].encode()
            assert hashlib.sha256(text).hexdigest() == item["notice"]["sha256"]
            assert item["event"]["notice_sha256"] == item["notice"]["sha256"]
    by_position = {}
    previous = None
    for link in doc["audit_entries"]:
        entry = link["entry"]
        computed = hashlib.sha256(link["prev_hash"].encode() + _canonical(entry)).hexdigest()
        assert computed == link["hash"], f"entry {entry['position']} was altered"
        if previous is not None and previous["entry"]["position"] + 1 == entry["position"]:
            assert link["prev_hash"] == previous["hash"], "the chain is broken"
        by_position[entry["position"]] = link
        previous = link
    for cp in doc["checkpoints"]:
        signed = jwt.decode(cp["signature"], key, algorithms=["ES256"])
        assert signed["position"] == cp["position"] and signed["head_hash"] == cp["head_hash"]
        assert datetime.fromisoformat(signed["signed_at"]) == datetime.fromisoformat(
            cp["signed_at"]
        )
        assert by_position[cp["position"]]["hash"] == cp["head_hash"]
    for item in doc["events"]:
        position = item["recorded_by_entry"]
        entry = by_position[position]["entry"]
        assert entry["entity"] == "consent_event" and entry["entity_id"] == item["event"]["id"]
        cp = min(c["position"] for c in doc["checkpoints"] if c["position"] >= position)
        # Unbroken from the recording entry to its checkpoint.
        assert all(p in by_position for p in range(position, cp + 1))
    return True


async def _proof_case(client, crm):
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    for body in (
        give(sid, purpose="content_subscriptions"),
        {
            "subject_id": sid,
            "purpose": "content_subscriptions",
            "action": "withdrawn",
            "method": "email",
        },
        give(
            sid,
            purpose="content_subscriptions",
            notice_text="Second wording: white papers monthly.",
        ),
        give(sid, purpose="surveys"),
    ):
        r = await client.post("/v1/consent-events", json=body, headers=crm)
        assert r.status_code == 201, r.text
    return sid


async def test_proof_verifies_with_the_jwks_alone(client, crm, auditor):
    sid = await _proof_case(client, crm)
    r = await client.get(
        f"/v1/subjects/{sid}/consent-proof",
        params={"purpose": "content_subscriptions"},
        headers=auditor,
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["complete"] is True and doc["checkpoint"] == doc["checkpoints"][-1]
    assert [e["event"]["action"] for e in doc["events"]] == ["given", "withdrawn", "given"]
    assert {e["event"]["purpose"] for e in doc["events"]} == {"content_subscriptions"}
    assert doc["events"][0]["notice"]["text"] == NOTICE
    assert doc["events"][1]["notice"] is None
    assert doc["events"][2]["notice"]["text"].startswith("Second wording")
    jwks = (await client.get("/v1/keys", headers=auditor)).json()
    # The document alone, as a regulator would receive it: serialised and read back.
    doc = json.loads(json.dumps(doc))
    assert verify_proof(doc, jwks)
    everything = (await client.get(f"/v1/subjects/{sid}/consent-proof", headers=auditor)).json()
    assert len(everything["events"]) == 4 and verify_proof(everything, jwks)


@pytest.mark.parametrize("tamper", ["receipt", "entry", "checkpoint", "chain"])
async def test_an_altered_proof_fails(client, crm, auditor, tamper):
    sid = await _proof_case(client, crm)
    doc = (await client.get(f"/v1/subjects/{sid}/consent-proof", headers=auditor)).json()
    jwks = (await client.get("/v1/keys", headers=auditor)).json()
    if tamper == "receipt":
        doc["events"][0]["receipt"]["collectionMethod"] = "phone"
    elif tamper == "entry":
        doc["audit_entries"][0]["entry"]["action"] = "consent.withdrawn"
    elif tamper == "checkpoint":
        doc["checkpoints"][-1]["head_hash"] = "0" * 64
    else:
        del doc["audit_entries"][1]
    with pytest.raises((AssertionError, KeyError, jwt.InvalidTokenError)):
        verify_proof(doc, jwks)


async def test_proof_errors_and_roles(client, crm, auditor, make_key):
    sid = await _proof_case(client, crm)
    missing = await client.get(
        "/v1/subjects/00000000-0000-4000-8000-000000000000/consent-proof", headers=auditor
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad = await client.get(f"/v1/subjects/{sid}/consent-proof?purpose=nope", headers=auditor)
    assert bad.status_code == 422
    website = await make_key("website")
    assert (
        await client.get(f"/v1/subjects/{sid}/consent-proof", headers=website)
    ).status_code == 403
    assert (await client.get(f"/v1/subjects/{sid}/consent-proof", headers=crm)).status_code == 200
