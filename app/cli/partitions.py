"""`consent-api partitions ...`: list, create months ahead, export and detach past months."""

import argparse
import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

from app.cli.common import database_url, in_transaction
from app.core.config import Settings, current_settings


def _month(value: str) -> date:
    try:
        year, month = value.split("-")
        return date(int(year), int(month), 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected YYYY-MM") from exc


async def _detach(
    url: str, settings: Settings, before: date, export_dir: Path, drop: bool
) -> list[Any]:
    from rich.progress import Progress

    from app.services.partitions import detach_month, months_before

    months = await in_transaction(url, settings, months_before, before=before)
    done: list[Any] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("exporting and detaching", total=len(months))
        for month in months:  # a transaction per month: each one is whole or untouched
            done += await in_transaction(
                url, settings, detach_month, month=month, export_dir=export_dir, drop=drop
            )
            progress.advance(task)
    return done


def _list(url: str, settings: Settings) -> None:
    from app.services.partitions import list_partitions

    for p in asyncio.run(in_transaction(url, settings, list_partitions)):
        month = p.month.strftime("%Y-%m") if p.month else "default"
        print(f"{p.name}\t{month}\t{p.rows} rows\t{p.unsealed} unsealed")


def _detach_command(url: str, settings: Settings, args: argparse.Namespace) -> None:
    from app.services.partitions import RetentionRefused

    args.export_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = asyncio.run(_detach(url, settings, args.before, args.export_dir, args.drop))
    except RetentionRefused as exc:
        raise SystemExit(f"consent-api: {exc}") from exc
    for item in done:
        print(json.dumps(item))
    print(f"Detached {len(done)} partitions before {args.before:%Y-%m}.")


def _partitions(args: argparse.Namespace) -> None:
    from app.services.partitions import ensure_partitions

    settings = current_settings()
    url = database_url(settings)
    if args.partitions_command == "list":
        _list(url, settings)
    elif args.partitions_command == "maintain":
        created = asyncio.run(
            in_transaction(url, settings, ensure_partitions, months_ahead=args.months_ahead)
        )
        print(f"Created {created or 0} partitions.")
    else:
        _detach_command(url, settings, args)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parts = sub.add_parser("partitions", help="monthly partitions of decisions and audit log")
    what = parts.add_subparsers(dest="partitions_command", required=True)
    what.add_parser("list", help="attached partitions with row and unsealed counts")
    maintain = what.add_parser("maintain", help="create this month's and coming months' partitions")
    maintain.add_argument(
        "--months-ahead",
        type=int,
        default=3,
        help="how many months after this one get their partitions now (default: %(default)s)",
    )
    detach = what.add_parser(
        "detach",
        help="export (COPY to a file, recorded with its SHA-256) and detach every month before"
        " YYYY-MM; refuses a month with unsealed audit entries",
    )
    detach.add_argument(
        "--before",
        type=_month,
        required=True,
        metavar="YYYY-MM",
        help="every month before this one is exported and detached",
    )
    detach.add_argument(
        "--export-dir",
        type=Path,
        required=True,
        help="directory for the exported files (created if missing)",
    )
    detach.add_argument("--drop", action="store_true", help="drop the detached tables too")
    parts.set_defaults(func=_partitions)
