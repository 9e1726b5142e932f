"""Health, readiness, metrics by route template, and the OpenAPI contract."""

import json
import uuid
from pathlib import Path

import pytest

from app.openapi_export import render_openapi

ROOT = Path(__file__).resolve().parents[1]


async def test_health_and_ready(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_readyz_is_503_when_the_database_is_gone(test_settings):
    import httpx

    from app.core.db import create_engine
    from app.main import create_app

    dead = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", test_settings)
    app = create_app(test_settings, engine=dead)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/readyz")
    await dead.dispose()
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"


async def test_metrics_label_routes_by_template_not_raw_path(client, crm, auditor):
    sid = uuid.uuid4()
    await client.get(f"/v1/subjects/{sid}", headers=crm)
    text = (await client.get("/metrics", headers=auditor)).text
    assert 'route="/v1/subjects/{subject_id}"' in text
    assert str(sid) not in text
    assert "consent_api_http_request_duration_seconds_bucket" in text


def test_committed_openapi_matches_the_app(app):
    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert committed == render_openapi(app), "run `consent-api export-openapi` and commit it"


def test_operation_ids_are_stable_and_errors_documented(app):
    spec = json.loads(render_openapi(app))
    ids = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ids.append(op["operationId"])
            assert op["operationId"].isidentifier(), op["operationId"]
            if path.startswith("/v1/") or path == "/metrics":
                codes = set(op["responses"])
                # The webhook's credential is its secret, not a role: no 403 there. The
                # public keys need no credential at all.
                needed = {"401"} if path.startswith("/v1/webhooks/") else {"401", "403"}
                if "security" not in op and not path.startswith("/v1/webhooks/"):
                    needed = set()
                assert needed <= codes, (method, path)
                for code in codes - {"200", "201", "202", "204"}:
                    content = op["responses"][code]["content"]
                    assert "application/problem+json" in content, (method, path, code)
    assert len(ids) == len(set(ids))


def test_production_refuses_default_secrets(monkeypatch):
    import pytest
    from pydantic import ValidationError

    from app.core.config import Settings

    for key in list(__import__("os").environ):
        if key.startswith("CONSENT_"):
            monkeypatch.delenv(key)
    db = "postgresql+asyncpg://consent@db.internal/consent"
    with pytest.raises(ValidationError, match="CONSENT_SECRET_KEY"):
        Settings(env="production", database_url=db)
    with pytest.raises(ValidationError, match="CONSENT_SIGNING_KEY_PEM"):
        Settings(env="production", database_url=db, secret_key="a-real-secret-of-some-length-0")
    with pytest.raises(ValidationError, match="too weak"):
        Settings(env="production", database_url=db, secret_key="abc", signing_key_pem="pem")
    with pytest.raises(ValidationError, match="too weak"):
        Settings(env="production", database_url=db, secret_key="ab" * 20, signing_key_pem="pem")
    strong = "Zq8-vTn3LwP0xYk7RbC2mHs9dJf4gUa1E"
    with pytest.raises(ValidationError, match="CONSENT_DATABASE_URL must be set"):
        Settings(env="production", secret_key=strong, signing_key_pem="pem")
    ok = Settings(env="production", database_url=db, secret_key=strong, signing_key_pem="pem")
    assert ok.env == "production"
    assert Settings().env == "development"  # the embedded default


def test_a_settings_error_is_one_line_without_the_secret(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_ENV="production", CONSENT_SECRET_KEY="tail-of-a-secret-XYZ123")
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode != 0
    assert "XYZ123" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("consent-api: invalid settings:"), r.stderr


def test_production_with_nothing_set_names_every_missing_setting_and_starts_nothing(tmp_path):
    """`serve` in production with no other setting: one line, every missing setting named,
    exit 1, and no embedded PostgreSQL started (no data directory made)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_ENV="production", CONSENT_DATA_DIR=str(tmp_path / "data"))
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for name in ("CONSENT_DATABASE_URL", "CONSENT_SECRET_KEY", "CONSENT_SIGNING_KEY_PEM"):
        assert name in lines[0], (name, lines[0])
    assert not (tmp_path / "data").exists()


@pytest.mark.pg_independent
def test_the_image_fails_closed_and_checks_its_health():
    """The image is production unless development is asked for: CONSENT_ENV=production, a
    HEALTHCHECK on /readyz, a non-root user, the data directory a volume (development)."""
    lines = [line.strip() for line in Path("Dockerfile").read_text().splitlines() if line.strip()]
    instructions = [line for line in lines if not line.startswith("#")]
    env = " ".join(line for line in instructions if line.startswith(("ENV", "CONSENT_")))
    assert "CONSENT_ENV=production" in env
    assert any(line.startswith("HEALTHCHECK") for line in instructions)
    assert any("/readyz" in line for line in instructions)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("VOLUME") for line in instructions)
    assert "CONSENT_DATABASE_URL" not in env  # never a default database in the image
