"""`consent-api sweep` and `consent-api report-link` against the live server's database,
where data is committed as the command line sees it."""

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from app.core.crypto import email_hash
from app.core.db import create_engine
from app.web import session as pages
from tests.test_cli import run_cli


async def _sql(live, sql, **params):
    engine = create_engine(live.database_url, live.settings)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return result.all() if result.returns_rows else []
    finally:
        await engine.dispose()


LIVE = "SELECT count(*) FROM subjects WHERE erased_at IS NULL"


async def test_sweep_is_a_dry_run_unless_apply(live_server):
    sid = uuid.uuid4()
    email = f"old-{sid.hex[:8]}@example.com"
    await _sql(
        live_server,
        "INSERT INTO subjects (id, email, email_hash, name, category, source, restricted,"
        " created_at, updated_at) VALUES (:id, :e, :h, 'Old Visitor', 'visitor', 'event',"
        " false, :c, :c)",
        id=sid,
        e=email,
        h=email_hash(email),
        c=datetime.now(UTC) - timedelta(days=900),
    )
    env = {**os.environ, "CONSENT_DATABASE_URL": live_server.database_url}
    before = (await _sql(live_server, LIVE))[0][0]
    # No flag at all: a dry run, as the HTTP sweep defaults to one.
    plain = run_cli("sweep", env=env)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("Dry run") and "would be erased" in plain.stdout
    assert "consent-api sweep --apply" in plain.stdout and str(sid) in plain.stdout
    dry = run_cli("sweep", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] and str(sid) in {i["subject_id"] for i in report["items"]}
    assert "--apply" in dry.stderr  # the hint never breaks the JSON on stdout
    assert (await _sql(live_server, LIVE))[0][0] == before
    assert (await _sql(live_server, "SELECT email FROM subjects WHERE id = :i", i=sid))[0][
        0
    ] == email
    both = run_cli("sweep", "--apply", "--dry-run", env=env)
    assert both.returncode == 2 and "not allowed with" in both.stderr

    real = run_cli("sweep", "--apply", env=env)
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("Sweep ") and "erased" in real.stdout
    assert "--apply" not in real.stdout
    assert (await _sql(live_server, LIVE))[0][0] < before
    row = (await _sql(live_server, "SELECT email, erased_at FROM subjects WHERE id = :i", i=sid))[0]
    assert row.email is None and row.erased_at is not None
    entry = await _sql(
        live_server,
        "SELECT actor_name, digest FROM audit_entries WHERE action = 'retention.sweep'"
        " ORDER BY id DESC LIMIT 1",
    )
    assert entry[0].actor_name.startswith("cli:") and entry[0].digest["erased"] >= 1


async def test_report_link_opens_a_session(live_server):
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": live_server.database_url,
        "CONSENT_SECRET_KEY": live_server.settings.secret_key.get_secret_value(),
    }
    out = run_cli("report-link", "--role", "auditor", "--base-url", live_server.url, env=env)
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{live_server.url}/auditor/link/")
    async with live_server.client() as http:
        r = await http.get(link.removeprefix(live_server.url))
        assert r.status_code == 200 and pages.SESSION_COOKIE in r.cookies
        page = await http.get("/v1/reports/overview")
        assert page.status_code == 200 and 'id="open-requests"' in page.text
    bad = run_cli("report-link", "--role", "crm", env=env)
    assert bad.returncode != 0
