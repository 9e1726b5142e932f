"""`consent-api keys create|revoke|list`: the API keys, managed from the command line."""

import argparse
import asyncio
import json
from datetime import UTC
from typing import Any

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


def _scopes(role: str) -> list[str]:
    from app.core.auth import ROLE_SCOPES

    return sorted(ROLE_SCOPES.get(role, ()))


def _grouped(scopes: list[str]) -> str:
    """`subjects:read`, `subjects:write` -> `subjects:read/write`: a role's scopes fit a cell."""
    by_area: dict[str, list[str]] = {}
    for scope in scopes:
        area, _, right = scope.partition(":")
        by_area.setdefault(area, []).append(right)
    return ", ".join(f"{area}:{'/'.join(rights)}" for area, rights in by_area.items())


def _when(value: Any) -> str:
    # Date over time: the column stays ten characters wide.
    return value.astimezone(UTC).strftime("%Y-%m-%d\n%H:%M") if value is not None else ""


def _table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    # The key rows hold no last use: a key is looked up per request, never written back.
    # Scopes take what width there is (a crm key has 17); a name folds, never cut short.
    table = Table(title="API keys (times in UTC)", expand=True)
    table.add_column("name", overflow="fold", ratio=1)
    table.add_column("role", no_wrap=True)
    table.add_column("scopes", ratio=2)
    table.add_column("created", no_wrap=True)
    table.add_column("revoked", no_wrap=True)
    for row in rows:
        revoked = _when(row["revoked_at"])
        table.add_row(
            row["name"],
            row["role"],
            _grouped(_scopes(row["role"])),
            _when(row["created_at"]),
            revoked or "-",
            style="dim" if revoked else None,
        )
    return table


def _list(url: str, settings: Settings, *, as_json: bool) -> None:
    from rich.console import Console

    from app.services.access import api_keys

    rows = asyncio.run(in_transaction(url, settings, api_keys.list_keys))
    if as_json:  # one object a line, for scripts
        for row in rows:
            print(json.dumps({**row, "scopes": _scopes(row["role"])}, default=str))
        return
    if not rows:
        print("No API keys yet: `consent-api keys create --role ROLE --name NAME` makes one.")
        return
    Console().print(_table(rows))


def _keys(args: argparse.Namespace) -> None:
    settings = current_settings()
    url = database_url(settings)
    migrate(url)  # a fresh data directory works before any `migrate` or `serve`
    if args.keys_command == "create":
        _create(url, settings, args)
    elif args.keys_command == "revoke":
        _revoke(url, settings, args)
    else:
        _list(url, settings, as_json=args.json)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.core.auth import ROLES

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it once, last line")
    create.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="what the key may do (API.md's roles): " + ", ".join(ROLES),
    )
    create.add_argument("--name", required=True, help="a unique name, used to revoke the key")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name", help="the key's name, as `keys list` shows it")
    listed = keys_sub.add_parser("list", help="list keys as a table (never the key itself)")
    listed.add_argument(
        "--json",
        action="store_true",
        help="one JSON object a line (name, role, scopes, created_at, revoked_at), for scripts",
    )
    keys.set_defaults(func=_keys)
    key_rotation.add_parser(keys_sub)  # its own func: not an API-key command
