"""The development signing key, generated into the data directory on first use: several
workers starting at once (`serve --workers N`, two replicas on one data directory) must all
end up with the same key, none failing and none reading a half-written file."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.core.signing import KEY_FILE, _load_or_create

STARTING_AT_ONCE = 16


def test_workers_starting_at_once_share_one_key(tmp_path: Path) -> None:
    for attempt in range(20):  # the race is narrow: give it many chances
        data_dir = tmp_path / str(attempt)
        start = threading.Barrier(STARTING_AT_ONCE)

        def load() -> str:
            start.wait()
            return str(_load_or_create(data_dir, None).thumbprint())

        with ThreadPoolExecutor(STARTING_AT_ONCE) as pool:
            thumbprints = list(pool.map(lambda _: load(), range(STARTING_AT_ONCE)))
        assert len(set(thumbprints)) == 1  # every worker signs with the same key
        assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary file left
        assert (data_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
        assert thumbprints[0] == str(_load_or_create(data_dir, None).thumbprint())
