"""A changed CONSENT_SECRET_KEY would silently disable every opt-out (other hashes, no
match): the service refuses to start instead, in one line, whether the database already
holds a fingerprint of the key or only hashes made before fingerprints were kept."""

import asyncio
import os
import socket
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.config import Settings
from app.core.crypto import keyed_email_hash
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.models.subject import Subject
from app.services.access.key_fingerprints import WrongHashKey, check_hash_key, fingerprint

KEY_A = "the-first-secret-key-0123456789abcdefXYZ"
KEY_B = "a-second-secret-key-9876543210zyxwvuABC"


async def _fresh_database(database_url: str) -> str:
    url = make_url(database_url)
    name = f"consent_keys_{uuid.uuid4().hex[:10]}"
    admin = url.set(drivername="postgresql", database="postgres")
    await ensure_database(admin.render_as_string(hide_password=False), name)
    fresh = url.set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, fresh)
    return fresh


async def _check(url: str, secret: str, test_settings: Settings) -> None:
    settings = Settings(**{**test_settings.model_dump(), "secret_key": secret})
    engine = create_engine(url, settings)
    try:
        async with create_sessionmaker(engine)() as session:
            await check_hash_key(session, settings)
            await session.commit()
    finally:
        await engine.dispose()


async def _stored(url: str, test_settings: Settings) -> list[tuple[str, str]]:
    engine = create_engine(url, test_settings)
    try:
        async with engine.connect() as con:
            rows = await con.execute(text("SELECT use, fingerprint FROM key_fingerprints"))
            return [tuple(r) for r in rows]
    finally:
        await engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_first_start_records_the_key_and_another_key_is_refused(
    database_url, test_settings
):
    url = await _fresh_database(database_url)
    await _check(url, KEY_A, test_settings)
    settings_a = Settings(**{**test_settings.model_dump(), "secret_key": KEY_A})
    assert await _stored(url, test_settings) == [("email-hash", fingerprint(settings_a))]
    assert KEY_A not in fingerprint(settings_a)
    await _check(url, KEY_A, test_settings)  # the same key starts again
    with pytest.raises(WrongHashKey):
        await _check(url, KEY_B, test_settings)
    assert await _stored(url, test_settings) == [("email-hash", fingerprint(settings_a))]

    # `serve` says so in one line and exits 1, before serving anything.
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": url,
        "CONSENT_SECRET_KEY": KEY_B,
        "CONSENT_DATA_DIR": str(test_settings.data_dir),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "serve", "--port", str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "CONSENT_SECRET_KEY is not the key the stored e-mail hashes were made with" in lines[0]
    assert KEY_B not in done.stderr and KEY_A not in done.stderr
    assert "serving" not in done.stdout


async def test_a_database_from_before_fingerprints_is_checked_against_a_stored_hash(
    database_url, test_settings
):
    url = await _fresh_database(database_url)
    settings_a = Settings(**{**test_settings.model_dump(), "secret_key": KEY_A})
    engine = create_engine(url, test_settings)
    try:
        async with create_sessionmaker(engine)() as session:
            email = "kept@example.com"
            session.add(
                Subject(
                    email=email,
                    email_hash=keyed_email_hash(settings_a, email),
                    category="customer_contact",
                    source="enquiry",
                )
            )
            await session.commit()
    finally:
        await engine.dispose()
    with pytest.raises(WrongHashKey):
        await _check(url, KEY_B, test_settings)
    assert await _stored(url, test_settings) == []  # nothing recorded for the wrong key
    await _check(url, KEY_A, test_settings)
    assert await _stored(url, test_settings) == [("email-hash", fingerprint(settings_a))]
