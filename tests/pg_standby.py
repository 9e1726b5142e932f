"""A hot standby of a ScratchPostgres (tests/pg_server.py): `pg_basebackup -R` of the running
primary into a temporary directory, started on its own port with the same binaries, streaming
from the primary. initdb's defaults already allow it (wal_level replica, ten WAL senders, a
trusted `replication` entry for 127.0.0.1 in pg_hba.conf)."""

import shutil
import tempfile
from pathlib import Path

from tests.pg_server import ScratchPostgres, free_port


class ScratchStandby(ScratchPostgres):
    """A streaming hot standby of `primary`: start, stop, close as for any scratch server."""

    def __init__(self, primary: ScratchPostgres) -> None:
        # Not ScratchPostgres.__init__: the data directory comes from the primary, not initdb.
        self.bin_dir = primary.bin_dir
        self.user = primary.user
        self.root = Path(tempfile.mkdtemp(prefix="consent-standby-"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "data"
        self.port = free_port()
        if self.user:
            shutil.chown(self.root, self.user)
        # -R writes standby.signal and primary_conninfo; -X stream carries the WAL written
        # during the copy; a fast checkpoint, not a spread one, starts the copy at once.
        self._pg(["pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                  "-D", str(self.pgdata), "-R", "-X", "stream", "--checkpoint=fast"])  # fmt: skip
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            # The primary's copied settings name its port and socket directory: later lines win.
            conf.write(
                f"\nport = {self.port}\nunix_socket_directories = '{self.root}'\nhot_standby = on\n"
            )
