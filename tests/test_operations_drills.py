"""Operations drills (issue 14, README "Operations"): a backup restored into a fresh
database verifies; a signing-key rotation keeps old receipts and checkpoints verifiable."""

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import httpx
from joserfc.jwk import ECKey
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.db import create_engine, ensure_database
from app.core.signing import get_signer
from app.main import create_app
from app.services.access import api_keys
from tests.conftest import new_subject
from tests.live_service import admin_url_of, fresh_database
from tests.pg_server import embedded_bin_dir
from tests.test_consent import give


def _libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _client_for(url: str, settings: Settings):
    engine = create_engine(url, settings)
    app = create_app(settings, engine=engine)
    async with app.state.sessionmaker() as session:
        key = await api_keys.create_key(session, name=f"k-{uuid.uuid4().hex[:6]}", role="crm")
        auditor = await api_keys.create_key(
            session, name=f"a-{uuid.uuid4().hex[:6]}", role="auditor"
        )
        await session.commit()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return (
        engine,
        client,
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"Bearer {auditor}"},
    )


async def test_backup_restore_drill(database_url, test_settings, tmp_path):
    admin = admin_url_of(database_url)
    source = await fresh_database(admin, "consent_backup")
    engine, client, crm, auditor = await _client_for(source, test_settings)
    async with client:
        s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
        assert (
            await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
        ).status_code == 201
        before = (await client.get("/v1/audit/verify", headers=auditor)).json()
    await engine.dispose()
    assert before["ok"] and before["checked"] > 0

    dump = tmp_path / "consent.dump"
    bin_dir = Path(os.environ.get("CONSENT_TEST_PG_BIN") or embedded_bin_dir())
    pg_dump, pg_restore = bin_dir / "pg_dump", bin_dir / "pg_restore"
    await asyncio.to_thread(
        subprocess.run, [pg_dump, "-Fc", "-f", dump, "-d", _libpq(source)], check=True, timeout=120
    )
    restored_name = f"consent_restored_{uuid.uuid4().hex[:8]}"
    await ensure_database(admin, restored_name)
    restored = make_url(source).set(database=restored_name).render_as_string(hide_password=False)
    await asyncio.to_thread(
        subprocess.run,
        [pg_restore, "--no-owner", "--exit-on-error", "-d", _libpq(restored), dump],
        check=True,
        timeout=120,
    )
    engine, client, crm, auditor = await _client_for(restored, test_settings)
    async with client:
        after = (await client.get("/v1/audit/verify", headers=auditor)).json()
        again = (await client.get(f"/v1/subjects/{s['id']}", headers=crm)).json()
    await engine.dispose()
    assert after["ok"], after
    assert after["checked"] >= before["checked"]
    assert again["email"] == s["email"]


async def test_signing_key_rotation_keeps_old_signatures_valid(
    database_url, test_settings, tmp_path
):
    url = await fresh_database(admin_url_of(database_url), "consent_rotation")
    old_pem = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
    new_pem = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
    base = test_settings.model_dump()
    before = Settings(**{**base, "signing_key_pem": old_pem})
    engine, client, crm, auditor = await _client_for(url, before)
    async with client:
        s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
        event = (await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)).json()
        old_jws = (
            await client.get(
                f"/v1/consent-events/{event['id']}/receipt",
                headers={**crm, "Accept": "application/jose"},
            )
        ).text
        assert (await client.get("/v1/audit/verify", headers=auditor)).json()["ok"]
    await engine.dispose()

    old_public = ECKey.import_key(old_pem).as_pem(private=False).decode()
    after = Settings(
        **{**base, "signing_key_pem": new_pem, "signing_previous_keys_pem": old_public}
    )
    engine, client, crm, auditor = await _client_for(url, after)
    async with client:
        kids = [k["kid"] for k in (await client.get("/v1/keys", headers=crm)).json()["keys"]]
        verify = (await client.get("/v1/audit/verify", headers=auditor)).json()
        new_jws = (
            await client.get(
                f"/v1/consent-events/{event['id']}/receipt",
                headers={**crm, "Accept": "application/jose"},
            )
        ).text
    await engine.dispose()
    signer = get_signer(after)
    old_kid, new_kid = (
        ECKey.import_key(old_pem).thumbprint(),
        ECKey.import_key(new_pem).thumbprint(),
    )
    assert kids == [new_kid, old_kid]
    assert verify["ok"] and verify["checkpoints_checked"] >= 1, verify
    assert signer.verify(old_jws) is not None  # a receipt signed before the rotation
    assert signer.verify(new_jws) is not None
    assert new_jws != old_jws
    without = get_signer(Settings(**{**base, "signing_key_pem": new_pem}))
    assert without.verify(old_jws) is None  # the old key is what makes it verify
