"""The `consent-api` command: keys, and a real `serve` that keeps its data across restarts."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.core.auth import hash_key

CLI = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str]:
    return {**os.environ, "CONSENT_DATABASE_URL": database_url}


async def test_keys_create_prints_the_key_last_and_revoke_disables_it(cli_env, client, db):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = run_cli("keys", "create", "--role", "crm", "--name", name, env=cli_env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cak_")
    row = (
        await db.execute(text("SELECT role, key_hash FROM api_keys WHERE name = :n"), {"n": name})
    ).one()
    assert row.role == "crm" and row.key_hash == hash_key(key)
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/purposes", headers=headers)).status_code == 200

    duplicate = run_cli("keys", "create", "--role", "crm", "--name", name, env=cli_env)
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    bad_role = run_cli("keys", "create", "--role", "root", "--name", "x", env=cli_env)
    assert bad_role.returncode != 0

    revoked = run_cli("keys", "revoke", name, env=cli_env)
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/v1/purposes", headers=headers)).status_code == 401
    assert run_cli("keys", "revoke", name, env=cli_env).returncode != 0

    # `keys list`: a table for people (the revoked key says when), JSON lines for scripts.
    table = run_cli("keys", "list", env={**cli_env, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if name in row)
    assert "crm" in line and "subjects:read/write" in table.stdout
    assert len(re.findall(r"\d{4}-\d\d-\d\d", line)) == 2  # created, revoked
    assert key not in table.stdout and not table.stdout.lstrip().startswith("{")
    header = next(row for row in table.stdout.splitlines() if "name" in row and "role" in row)
    assert all(h in header for h in ("scopes", "created", "revoked"))
    rows = [
        json.loads(r)
        for r in run_cli("keys", "list", "--json", env=cli_env).stdout.split("\n")
        if r
    ]
    mine = next(r for r in rows if r["name"] == name)
    assert mine["role"] == "crm" and mine["revoked_at"] is not None
    assert "subjects:write" in mine["scopes"] and "key_hash" not in mine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postmasters(pgdata: Path) -> list[int]:
    import psutil

    return [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres"
        and str(pgdata) in " ".join(p.info["cmdline"] or [])
        and "-D" in (p.info["cmdline"] or [])
    ]


def _start_serve(env: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not become ready")


def _postgres_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    import psutil

    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_serve_on_embedded_postgres_keeps_data_across_restarts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_DATA_DIR"] = str(tmp_path / "data")
    port = _free_port()
    proc = _start_serve(env, port)
    try:
        key = run_cli("keys", "create", "--role", "crm", "--name", "ops", env=env)
        assert key.returncode == 0, key.stderr
        headers = {"Authorization": f"Bearer {key.stdout.strip().splitlines()[-1]}"}
        body = {"email": "kept@example.com", "category": "prospect", "source": "event"}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/subjects", json=body, headers=headers)
        assert r.status_code == 201, r.text
        subject_id = r.json()["id"]
    finally:
        proc.send_signal(signal.SIGKILL)  # the hard way: no clean shutdown
        proc.wait(timeout=30)

    proc = _start_serve(env, port, workers=2)
    try:
        for _ in range(6):  # several connections, spread over both workers
            r = httpx.get(f"http://127.0.0.1:{port}/v1/subjects/{subject_id}", headers=headers)
            assert r.status_code == 200 and r.json()["email"] == "kept@example.com"
        assert len(_postmasters(tmp_path / "data" / "pg")) == 1  # one server for both workers
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # The last holder exited cleanly: the embedded server is stopped too.
    deadline = time.monotonic() + 15
    while _postgres_running(tmp_path / "data" / "pg") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _postgres_running(tmp_path / "data" / "pg")
