"""The `consent-api` command."""

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from app import imports_cli, partitions_cli
from app.core.config import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.core.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    # The embedded server belongs to this process; workers inherit CONSENT_DATABASE_URL
    # and connect to it, so `--workers N` shares one server.
    url = _database_url()
    migrate(url)
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
        proxy_headers=False,
    )


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
    if args.keys_command == "create":
        try:
            key = asyncio.run(
                _in_transaction(url, api_keys.create_key, name=args.name, role=args.role)
            )
        except api_keys.KeyAdminError as exc:
            raise SystemExit(f"consent-api: {exc}") from exc
        print(f"Created key `{args.name}` with role `{args.role}`. It is shown once:")
        print(key)
    elif args.keys_command == "revoke":
        if not asyncio.run(_in_transaction(url, api_keys.revoke_key, name=args.name)):
            raise SystemExit(f"consent-api: no active key named `{args.name}`")
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


def build_parser() -> argparse.ArgumentParser:
    from app.core.auth import ROLES

    parser = argparse.ArgumentParser(prog="consent-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(
        func=lambda _a: migrate()
    )
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it once, last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    keys_sub.add_parser("list", help="list keys (never the key itself)")
    keys.set_defaults(func=_keys)
    imports_cli.add_parser(sub, _database_url)
    partitions_cli.add_parser(sub, _database_url)
    export = sub.add_parser("export-openapi", help="write openapi/openapi.json")
    export.add_argument("--output", default="openapi/openapi.json")
    export.set_defaults(func=_export_openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
