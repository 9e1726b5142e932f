"""The `consent-api` command.

Its output is for people: a few plain lines on stdout, and any error as one line on stderr
with a non-zero exit. The embedded PostgreSQL's and Alembic's own chatter goes to
`<data dir>/consent-api.log` (also to the console with CONSENT_LOG_LEVEL=DEBUG).
"""

import argparse
import os
import sys
import warnings

from app.cli import (
    imports,
    keys,
    openapi,
    pages,
    partitions,
    receipts,
    retention,
    serve,
    sync,
    webhooks,
)
from app.cli.common import CliError, log_file, migrate, quiet_chatter
from app.core.config import get_settings, use_settings

__all__ = ["CliError", "build_parser", "main", "migrate"]

# In the order `consent-api --help` lists them.
GROUPS = (serve, keys, retention, pages, sync, webhooks, imports, partitions, openapi, receipts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consent-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


def _explain(exc: BaseException) -> str:
    """One line for the user: never a traceback, SQL text or a password."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ValidationError):  # the settings, from the environment
        error = exc.errors()[0]
        name = "CONSENT_" + "_".join(str(part) for part in error["loc"]).upper()
        return f"invalid setting {name}: {error['msg']}"
    if isinstance(exc, DBAPIError | OSError | ConnectionError) or type(exc).__module__.startswith(
        "asyncpg"
    ):
        cause = type(getattr(exc, "orig", None) or exc).__name__
        settings = get_settings()
        if not settings.database_url:
            return f"the embedded database failed ({cause}); see {log_file(settings)}"
        return f"cannot use the database ({cause}); check CONSENT_DATABASE_URL"
    if isinstance(exc, SQLAlchemyError):
        return f"database error ({type(exc).__name__}); run with CONSENT_LOG_LEVEL=DEBUG"
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    try:
        # Offline commands (export-openapi, verify-receipt) read no settings: they work
        # wherever they run, production environment or none.
        if args.func is not openapi.export_openapi and getattr(args, "needs_settings", True):
            settings = get_settings()  # the command's one read of the environment
            use_settings(settings)  # handed down: the command and the services read these
            quiet_chatter(settings)
        args.func(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("CONSENT_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        print(f"consent-api: {_explain(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
