"""The e-mail hash key rotates: new addresses are hashed with the new key at once, look-ups
by address keep working through the rotation, `keys rotate-email-hash` re-hashes every
known address, and an erased person's opt-out (a hash only, under the old key, kept
verify-only) still blocks their address when it is imported again."""

import json
import os
import subprocess
import sys

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.core.config import DEV_SECRET, use_settings
from app.core.crypto import HashKey
from app.main import create_app
from app.services.access import email_hash_rotation as rotation
from app.services.access.key_fingerprints import WrongHashKey, check_hash_key
from tests.conftest import new_subject
from tests.live_service import admin_url_of, fresh_database
from tests.test_rights import _complete, _verified

NEW_SECRET = "Zq8-vTn3LwP0xYk7RbC2mHs9dJf4gUa1E-rotated"
OLD, NEW = HashKey(0, DEV_SECRET.encode()), HashKey(1, NEW_SECRET.encode())
BOTH = f"1:{NEW_SECRET},0:{DEV_SECRET}"


@pytest.fixture
def rotated(test_settings):
    return test_settings.model_copy(update={"email_hash_keys": SecretStr(BOTH)})


@pytest.fixture
async def client_after(engine, conn, rotated):
    """The service restarted with the new key in front (same database, same transaction)."""
    app = create_app(rotated, engine=engine, session_bind=conn)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def _row(db, sql, **params):
    return (await db.execute(text(sql), params)).one()


async def _opt_out(client, crm, email):
    body = {"email": email, "channel": "email", "source": "crm"}
    r = await client.post("/v1/opt-outs", json=body, headers=crm)
    assert r.status_code in (200, 201), r.text


async def _decide(client, crm, sid):
    body = {"subject_id": sid, "purpose": "email_campaigns"}
    r = await client.post("/v1/decisions", json=body, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()


async def test_rotation_keeps_every_opt_out_matching(client, client_after, db, crm, rotated):
    live = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await _opt_out(client, crm, live["email"])
    gone = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await _opt_out(client, crm, gone["email"])
    req = await _verified(client, crm, "erasure", subject_id=gone["id"])
    await _complete(client, crm, req)

    # Restarted with the new key first: a new address is hashed with it at once, and
    # look-ups by address still find what the old key hashed.
    fresh = (await client_after.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    row = await _row(
        db, "SELECT email_hash, email_hash_key FROM subjects WHERE id = :i", i=fresh["id"]
    )
    assert (row.email_hash, row.email_hash_key) == (NEW.hash(fresh["email"]), 1)
    for email in (live["email"], gone["email"]):
        r = await client_after.get("/v1/opt-outs/check", params={"email": email}, headers=crm)
        assert r.json()["opted_out"] is True, email

    # The rotation re-hashes the live subject and its opt-out; the erased one's stays.
    use_settings(rotated)
    assert await rotation.remaining(db) >= 1
    after = rotation.uuid.UUID(int=0)
    while (step := await rotation.rehash_batch(db, after=after, size=2)).last_id:
        after = step.last_id
    assert await rotation.remaining(db) == 0
    row = await _row(
        db, "SELECT email_hash, email_hash_key FROM subjects WHERE id = :i", i=live["id"]
    )
    assert (row.email_hash, row.email_hash_key) == (NEW.hash(live["email"]), 1)
    moved = await _row(
        db,
        "SELECT count(*) AS n FROM marketing_optouts WHERE email_hash = :h AND email_hash_key = 1",
        h=NEW.hash(live["email"]),
    )
    assert moved.n == 1
    kept = await _row(
        db,
        "SELECT email_hash_key FROM marketing_optouts WHERE email_hash = :h",
        h=OLD.hash(gone["email"]),
    )
    assert kept.email_hash_key == 0
    assert "marketing_opt_out" in (await _decide(client_after, crm, live["id"]))["reasons"]

    # The erased person's address comes back: their opt-out moves to the new key and the
    # gate applies it.
    back = (
        await client_after.post("/v1/subjects", json=new_subject(email=gone["email"]), headers=crm)
    ).json()
    decision = await _decide(client_after, crm, back["id"])
    assert decision["allowed"] is False and "marketing_opt_out" in decision["reasons"], decision
    row = await _row(
        db,
        "SELECT email_hash_key FROM marketing_optouts WHERE email_hash = :h",
        h=NEW.hash(gone["email"]),
    )
    assert row.email_hash_key == 1


async def test_a_key_that_stored_hashes_use_cannot_be_dropped_or_changed(
    db, client, crm, test_settings, rotated
):
    subject = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await _opt_out(client, crm, subject["email"])
    await check_hash_key(db, test_settings)  # the first start records key 0's fingerprint
    await check_hash_key(db, rotated)  # the new key joins: its fingerprint recorded
    only_new = test_settings.model_copy(update={"email_hash_keys": SecretStr(f"1:{NEW_SECRET}")})
    with pytest.raises(WrongHashKey, match="still use key 0"):
        await check_hash_key(db, only_new)  # the opt-out above is still under key 0
    changed = test_settings.model_copy(
        update={"email_hash_keys": SecretStr(f"1:{NEW_SECRET[::-1]},0:{DEV_SECRET}")}
    )
    with pytest.raises(WrongHashKey, match="key 1 is not the key"):
        await check_hash_key(db, changed)


async def test_the_command_rehashes_resumably_and_says_what_to_keep(database_url, tmp_path):
    url = await fresh_database(admin_url_of(database_url), prefix="consent_rotate")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_DATABASE_URL=url, CONSENT_DATA_DIR=str(tmp_path))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    one = cli("keys", "rotate-email-hash")
    assert one.returncode == 1 and "one e-mail hash key only" in one.stderr, one.stderr
    env["CONSENT_EMAIL_HASH_KEYS"] = BOTH
    first = cli("keys", "rotate-email-hash", "--batch", "10")
    assert first.returncode == 0, first.stderr
    assert "Re-hashed 0 addresses under e-mail hash key 1" in first.stdout
    assert "Keep the older keys" in first.stdout


async def test_an_erased_persons_opt_out_blocks_their_bulk_reimport(client, client_after, db, crm):
    """The same through the bulk import (the set-based path): the erased person's opt-out,
    stored under the old key, moves to the new key as their address comes back."""
    gone = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await _opt_out(client, crm, gone["email"])
    req = await _verified(client, crm, "erasure", subject_id=gone["id"])
    await _complete(client, crm, req)
    row = new_subject(email=gone["email"])
    r = await client_after.post(
        "/v1/subjects/import",
        content=json.dumps(row).encode() + b"\n",
        headers={**crm, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200 and r.json()["imported"] == 1, r.text
    back = await _row(
        db,
        "SELECT id, email_hash, email_hash_key FROM subjects"
        " WHERE email = :e AND erased_at IS NULL",
        e=gone["email"],
    )
    assert (back.email_hash, back.email_hash_key) == (NEW.hash(gone["email"]), 1)
    decision = await _decide(client_after, crm, str(back.id))
    assert "marketing_opt_out" in decision["reasons"], decision
    moved = await _row(
        db,
        "SELECT email_hash_key FROM marketing_optouts WHERE email_hash = :h",
        h=NEW.hash(gone["email"]),
    )
    assert moved.email_hash_key == 1
