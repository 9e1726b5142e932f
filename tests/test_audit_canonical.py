"""The chain hashes the bytes the consent proofs document: `json.dumps(entry, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`. The sealer writes them with orjson where the
two agree; these tests hold it to the json module's bytes, in memory and in the database."""

import hashlib
import json
import random
from datetime import UTC, datetime
from types import SimpleNamespace

import orjson
from sqlalchemy import text

from app.core.signing import get_signer
from app.services.audit.chain import (
    ENTRY_COLUMNS,
    _has_float,
    canonical_json,
    seal_pending,
    verify,
)


def _reference(row, position: int) -> bytes:
    """The documented bytes, written out here rather than taken from the code under test."""
    entry = {
        "position": position,
        "id": row.id,
        "at": row.at.isoformat(),
        "actor_key_id": None if row.actor_key_id is None else str(row.actor_key_id),
        "actor_name": row.actor_name,
        "actor_role": row.actor_role,
        "action": row.action,
        "entity": row.entity,
        "entity_id": row.entity_id,
        "digest": row.digest,
    }
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _text(rng: random.Random) -> str:
    pools = [(0, 0x20), (0x20, 0x7F), (0x7F, 0x800), (0x2000, 0x3000), (0xE000, 0x10FFFF)]
    out = []
    for _ in range(rng.randint(0, 8)):
        lo, hi = rng.choice(pools)
        code = rng.randrange(lo, hi)
        if 0xD800 <= code < 0xE000:  # no lone surrogates: PostgreSQL text cannot hold them
            code = 0x41
        out.append(chr(code))
    return "".join(out)


def _value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "bool", "none", "float", "big"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return _text(rng)
    if kind == "int":
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randint(-(10**9), 10**9)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "float":
        return rng.choice([1e-07, 1e16, 0.1, 1.5, 100.0, 1e22, 2.5e-300, rng.random()])
    if kind == "big":
        return rng.choice([2**64, -(2**64) - 1, 10**30])
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_canonical_json_is_the_json_modules_bytes_for_any_digest():
    rng = random.Random(20261203)
    fast_path_taken = 0
    for n in range(5000):
        row = SimpleNamespace(
            id=n + 1,
            at=datetime(2026, 12, 3, 10, rng.randint(0, 59), rng.randint(0, 59), n, tzinfo=UTC),
            actor_key_id=None,
            actor_name=_text(rng) or "x",
            actor_role="crm",
            action="decision.create",
            entity="decision",
            entity_id=rng.choice([None, _text(rng)]),
            digest=_value(rng),
        )
        assert canonical_json(row, n + 1) == _reference(row, n + 1), row
        fast_path_taken += _on_the_fast_path(row.digest)
    assert 1000 < fast_path_taken < 5000  # both paths are exercised


def _on_the_fast_path(digest) -> bool:
    """Whether canonical_json writes this digest with orjson (no float, nothing orjson
    refuses)."""
    try:
        orjson.dumps(digest)
    except TypeError:
        return False
    return not _has_float(digest)


def _jsonb_safe(value):
    """A generated value as jsonb can hold it: no NUL in a string."""
    if isinstance(value, str):
        return value.replace("\x00", "0")
    if isinstance(value, list):
        return [_jsonb_safe(v) for v in value]
    if isinstance(value, dict):
        return {_jsonb_safe(k): _jsonb_safe(v) for k, v in value.items()}
    return value


async def test_sealed_hashes_follow_the_documented_formula_whatever_the_digest(
    client, crm, db, test_settings
):
    """Entries whose digests take the fast path and entries that do not are sealed, the
    sealer reading each digest from its jsonb text, and every stored hash is
    sha256(prev_hash + the json module's bytes). Among them: a float orjson writes
    differently, integers past 64 bits and of 400 digits (which orjson will not read),
    nesting deeper than orjson writes, control characters and non-ASCII, and 300
    generated digests."""
    deep: dict = {"leaf": 1}
    for _ in range(300):
        deep = {"d": deep}
    digests = [
        {"note": "plain", "n": 3, "ok": True, "reasons": []},
        {"ratio": 1e-07},
        {"big": 2**70},
        {"huge": 10**400, "ok": True},
        {"deep": deep},
        {"text": "tab\there, line\nbreak, \x01, é, \u2028, 😀", "nested": {"b": [1, {"a": None}]}},
    ]
    rng = random.Random(3)
    digests += [{"generated": _jsonb_safe(_value(rng))} for _ in range(300)]
    await db.execute(
        text(
            "INSERT INTO audit_entries (actor_name, actor_role, action, entity, entity_id, digest)"
            " SELECT 'test', 'admin', 'test.canonical', 'test', 'c', CAST(d AS jsonb)"
            " FROM unnest(CAST(:ds AS text[])) WITH ORDINALITY AS x(d, n) ORDER BY n"
        ),
        {"ds": [json.dumps(d) for d in digests]},
    )
    signer = get_signer(test_settings)
    assert await seal_pending(db, signer) >= len(digests)
    rows = (
        await db.execute(
            text(
                f"SELECT {ENTRY_COLUMNS}, position, prev_hash, hash FROM audit_entries"
                " WHERE action = 'test.canonical' ORDER BY position"
            )
        )
    ).all()
    assert [r.digest for r in rows][-len(digests) :] == digests
    assert 50 < sum(_on_the_fast_path(d) for d in digests) < len(digests)
    for row in rows:
        expected = hashlib.sha256(row.prev_hash.encode() + _reference(row, row.position))
        assert row.hash == expected.hexdigest()
    assert (await verify(db, signer)).ok
