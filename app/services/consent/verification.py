"""Offline verification of what the service signs and hands out, with the public keys
(JWKS) alone, as a person, an auditor or a regulator holding one would: a consent receipt
(compact JWS, `Accept: application/jose`), an audit checkpoint's signature, or a whole
consent proof (`GET /v1/subjects/{id}/consent-proof`: each step of its
`verification.steps`). Pure: no database, no settings, no network.

Every failure is a VerificationFailed whose message is one line saying what is wrong (bad
signature, unknown key id, malformed input, an altered proof), never a traceback.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey

from app.core.signing import ALGORITHM

PROOF_FORMAT = "consent-api/consent-proof/1"
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")
Keys = dict[str, ECKey]


class VerificationFailed(Exception):
    """The input does not verify; the message is the one line to show."""


@dataclass(frozen=True)
class Verdict:
    summary: str  # one line: what was verified, with which key(s)
    claims: dict[str, Any]  # what the signatures vouch for


def load_jwks(data: Any) -> Keys:
    """The ES256 (EC P-256) keys of a JWKS by `kid`; other keys are not ours to use."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise VerificationFailed('malformed JWKS: expected {"keys": [...]}')
    keys: Keys = {}
    for jwk in data["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        try:
            key = ECKey.import_key({k: v for k, v in jwk.items() if k != "d"})  # public only
        except (JoseError, ValueError, TypeError) as exc:
            raise VerificationFailed(f"malformed JWKS: a key does not import ({exc})") from None
        keys[str(jwk.get("kid") or key.thumbprint())] = key
    if not keys:
        raise VerificationFailed("the JWKS holds no ES256 (EC P-256) key")
    return keys


def verify_jws(token: str, keys: Keys) -> tuple[dict[str, Any], str]:
    """The payload of a compact JWS signed with a key of the JWKS, and that key's id."""
    if not COMPACT_JWS.fullmatch(token):
        raise VerificationFailed("malformed: not a compact JWS (three base64url parts)")
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError) as exc:
        raise VerificationFailed(f"malformed JWS header ({exc})") from None
    if header.get("alg") != ALGORITHM:
        raise VerificationFailed(f"unsupported algorithm {header.get('alg')!r}: expected ES256")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise VerificationFailed(f"unknown key id {kid!r}: no key of the JWKS has it")
    try:
        payload = jws.deserialize_compact(token, keys[kid], algorithms=[ALGORITHM]).payload
    except BadSignatureError:
        raise VerificationFailed(f"bad signature: key {kid} did not sign this") from None
    except (JoseError, ValueError) as exc:
        raise VerificationFailed(f"malformed JWS ({exc})") from None
    try:
        claims = json.loads(payload)
    except ValueError:
        raise VerificationFailed("malformed: the signed payload is not JSON") from None
    if not isinstance(claims, dict):
        raise VerificationFailed("malformed: the signed payload is not a JSON object")
    return claims, kid


def verify_text(text: str, keys: Keys) -> Verdict:
    """A compact JWS (a receipt or a checkpoint signature) or a consent proof (JSON)."""
    text = text.strip()
    if text.startswith('"'):  # a JWS saved as a JSON string
        try:
            text = str(json.loads(text))
        except ValueError:
            raise VerificationFailed("malformed: an unterminated JSON string") from None
    if not text.startswith("{"):
        return _signed_token(text, keys)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise VerificationFailed(f"malformed JSON ({exc.args[0].split(':')[0]})") from None
    if isinstance(document, dict) and document.get("format") == PROOF_FORMAT:
        return verify_proof(document, keys)
    if isinstance(document, dict) and "consentReceiptID" in document:
        raise VerificationFailed(
            "an unsigned receipt (JSON) proves nothing: fetch it with"
            " `Accept: application/jose`, or verify a consent proof"
        )
    raise VerificationFailed(f"malformed: JSON that is not a consent proof ({PROOF_FORMAT})")


def _signed_token(token: str, keys: Keys) -> Verdict:
    claims, kid = verify_jws(token, keys)
    if "consentReceiptID" in claims:
        services, record = claims.get("services"), claims.get("iso27560")
        first = services[0] if isinstance(services, list) and services else {}
        service = first.get("service") if isinstance(first, dict) else None
        state = record.get("state") if isinstance(record, dict) else None
        return Verdict(
            f"valid consent receipt {claims['consentReceiptID']} (subject"
            f" {claims.get('piiPrincipalId')}, purpose {service}, {state}), signed by key {kid}",
            claims,
        )
    if {"position", "head_hash", "signed_at"} <= claims.keys():
        return Verdict(
            f"valid audit checkpoint at position {claims['position']}, signed by key {kid}",
            claims,
        )
    raise VerificationFailed(
        f"signed by key {kid}, but neither a consent receipt nor an audit checkpoint"
    )


def verify_proof(document: dict[str, Any], keys: Keys) -> Verdict:
    """Every step of the proof's `verification.steps`: receipts, notices, the chain segments,
    the checkpoints, and each event's recording entry up to a signed checkpoint."""
    try:
        receipts, kids = _proof_receipts(document["events"], keys)
        chain = _proof_chain(document["audit_entries"])
        checkpoints = _proof_checkpoints(document["checkpoints"], chain, keys, kids)
        _proof_recorded(document["events"], chain, checkpoints)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise VerificationFailed(f"malformed consent proof ({type(exc).__name__}: {exc})") from None
    summary = (
        f"valid consent proof for subject {document.get('subject_id')}: {len(receipts)}"
        f" receipt(s), {len(chain)} audit entries, {len(checkpoints)} signed checkpoint(s),"
        f" signed by key {', '.join(sorted(kids)) or '-'}"
    )
    claims = {
        "subject_id": document.get("subject_id"),
        "purpose": document.get("purpose"),
        "receipts": receipts,
        "checkpoints": [checkpoints[p] for p in sorted(checkpoints)],
    }
    return Verdict(summary, claims)


def _proof_receipts(events: list[Any], keys: Keys) -> tuple[list[dict[str, Any]], set[str]]:
    receipts, kids = [], set()
    for item in events:
        event_id = item["event"]["id"]
        claims, kid = _labelled(f"event {event_id}", verify_jws, item["receipt_jws"], keys)
        if claims != item["receipt"]:
            raise VerificationFailed(f"event {event_id}: the receipt differs from its signed copy")
        if claims.get("consentReceiptID") != event_id:
            raise VerificationFailed(f"event {event_id}: its signed receipt names another event")
        notice = item.get("notice")
        if notice:
            digest = hashlib.sha256(str(notice["text"]).encode()).hexdigest()
            if digest != notice["sha256"] or item["event"].get("notice_sha256") != digest:
                raise VerificationFailed(f"event {event_id}: the notice text was altered")
        receipts.append(claims)
        kids.add(kid)
    return receipts, kids


def _labelled(label: str, fn: Any, *args: Any) -> Any:
    """`fn(*args)`, its failure prefixed with what was being verified."""
    try:
        return fn(*args)
    except VerificationFailed as exc:
        raise VerificationFailed(f"{label}: {exc}") from None


def _canonical(entry: dict[str, Any]) -> bytes:
    """What the chain hashes (app.services.audit.chain): keys sorted, separators ',' and
    ':', non-ASCII kept as UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _proof_chain(links: list[Any]) -> dict[int, dict[str, Any]]:
    """The chain segments by position, each entry's hash recomputed and each link checked."""
    chain: dict[int, dict[str, Any]] = {}
    for link in links:
        position = int(link["entry"]["position"])
        computed = hashlib.sha256(link["prev_hash"].encode() + _canonical(link["entry"]))
        if computed.hexdigest() != link["hash"]:
            raise VerificationFailed(f"audit entry at position {position} was altered")
        previous = chain.get(position - 1)
        if previous is not None and link["prev_hash"] != previous["hash"]:
            raise VerificationFailed(f"the audit chain is broken before position {position}")
        chain[position] = link
    return chain


def _proof_checkpoints(
    items: list[Any], chain: dict[int, dict[str, Any]], keys: Keys, kids: set[str]
) -> dict[int, dict[str, Any]]:
    """Each checkpoint's signature, its payload against its fields, and its head in the chain."""
    signed: dict[int, dict[str, Any]] = {}
    for cp in items:
        position = int(cp["position"])
        label = f"checkpoint at position {position}"
        claims, kid = _labelled(label, verify_jws, cp["signature"], keys)
        same_time = datetime.fromisoformat(str(claims.get("signed_at"))) == datetime.fromisoformat(
            cp["signed_at"]
        )
        if claims.get("position") != position or claims.get("head_hash") != cp["head_hash"]:
            raise VerificationFailed(f"{label}: its fields differ from what was signed")
        if not same_time:
            raise VerificationFailed(f"{label}: its time differs from what was signed")
        if position not in chain or chain[position]["hash"] != cp["head_hash"]:
            raise VerificationFailed(f"{label}: its head is not the chain's entry there")
        signed[position] = claims
        kids.add(kid)
    return signed


def _proof_recorded(
    events: list[Any], chain: dict[int, dict[str, Any]], checkpoints: dict[int, Any]
) -> None:
    """Each event's recording entry names it, and the chain runs unbroken from that entry to
    a signed checkpoint."""
    for item in events:
        event_id, position = item["event"]["id"], item.get("recorded_by_entry")
        link = chain.get(position) if isinstance(position, int) else None
        if link is None:
            raise VerificationFailed(
                f"event {event_id}: no sealed audit entry records it (an incomplete proof)"
            )
        entry = link["entry"]
        if entry.get("entity") != "consent_event" or entry.get("entity_id") != event_id:
            raise VerificationFailed(f"event {event_id}: its audit entry records something else")
        covering = [p for p in checkpoints if p >= position]
        if not covering:
            raise VerificationFailed(f"event {event_id}: no signed checkpoint covers its entry")
        if any(p not in chain for p in range(position, min(covering) + 1)):
            raise VerificationFailed(f"event {event_id}: the chain to its checkpoint has a gap")
