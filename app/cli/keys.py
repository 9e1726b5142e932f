"""`consent-api keys create|revoke|list`: the API keys, managed from the command line."""

import argparse
import asyncio
import json

from app.cli import key_rotation
from app.cli.common import CliError, database_url, in_transaction, migrate
from app.core.config import Settings, current_settings


def _create(url: str, settings: Settings, args: argparse.Namespace) -> None:
    from app.services.access import api_keys

    try:
        key = asyncio.run(
            in_transaction(url, settings, api_keys.create_key, name=args.name, role=args.role)
        )
    except api_keys.KeyAdminError as exc:
        raise CliError(str(exc)) from exc
    print(f"Created key `{args.name}` with role `{args.role}`. It is shown once:")
    print(key)


def _revoke(url: str, settings: Settings, args: argparse.Namespace) -> None:
    from app.services.access import api_keys

    if not asyncio.run(in_transaction(url, settings, api_keys.revoke_key, name=args.name)):
        raise CliError(f"no active key named `{args.name}`")
    print(f"Revoked `{args.name}`.")


def _list(url: str, settings: Settings) -> None:
    from app.services.access import api_keys

    for row in asyncio.run(in_transaction(url, settings, api_keys.list_keys)):
        print(json.dumps(row, default=str))


def _keys(args: argparse.Namespace) -> None:
    settings = current_settings()
    url = database_url(settings)
    migrate(url)  # a fresh data directory works before any `migrate` or `serve`
    if args.keys_command == "create":
        _create(url, settings, args)
    elif args.keys_command == "revoke":
        _revoke(url, settings, args)
    else:
        _list(url, settings)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.core.auth import ROLES

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it once, last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    keys_sub.add_parser("list", help="list keys (never the key itself)")
    keys.set_defaults(func=_keys)
    key_rotation.add_parser(keys_sub)  # its own func: not an API-key command
