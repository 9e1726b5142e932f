"""`consent-api partitions ...`: list, create months ahead, export and detach past months."""

import argparse
import asyncio
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from app.core.config import get_settings


def _month(value: str) -> date:
    try:
        year, month = value.split("-")
        return date(int(year), int(month), 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected YYYY-MM") from exc


async def _with_session(url: str, fn: Callable[[Any], Any]) -> Any:
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            result = await fn(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _detacher(month: date, export_dir: Path, drop: bool) -> Callable[[Any], Any]:
    from app.services.partitions import detach_month

    return lambda session: detach_month(session, month, export_dir, drop=drop)


async def _detach(url: str, before: date, export_dir: Path, drop: bool) -> list[Any]:
    from rich.progress import Progress

    from app.services.partitions import months_before

    months = await _with_session(url, lambda s: months_before(s, before))
    done: list[Any] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("exporting and detaching", total=len(months))
        for month in months:  # a transaction per month: each one is whole or untouched
            done += await _with_session(url, _detacher(month, export_dir, drop))
            progress.advance(task)
    return done


def run(args: argparse.Namespace, url: str) -> None:
    from app.services.partitions import RetentionRefused, ensure_partitions, list_partitions

    if args.partitions_command == "list":
        for p in asyncio.run(_with_session(url, list_partitions)):
            month = p.month.strftime("%Y-%m") if p.month else "default"
            print(f"{p.name}\t{month}\t{p.rows} rows\t{p.unsealed} unsealed")
    elif args.partitions_command == "maintain":
        created = asyncio.run(_with_session(url, lambda s: ensure_partitions(s, args.months_ahead)))
        print(f"Created {created or 0} partitions.")
    else:
        args.export_dir.mkdir(parents=True, exist_ok=True)
        try:
            done = asyncio.run(_detach(url, args.before, args.export_dir, args.drop))
        except RetentionRefused as exc:
            raise SystemExit(f"consent-api: {exc}") from exc
        for item in done:
            print(json.dumps(item))
        print(f"Detached {len(done)} partitions before {args.before:%Y-%m}.")


def add_parser(sub: argparse._SubParsersAction, database_url: Callable[[], str]) -> None:  # type: ignore[type-arg]
    parts = sub.add_parser("partitions", help="monthly partitions of decisions and audit log")
    what = parts.add_subparsers(dest="partitions_command", required=True)
    what.add_parser("list", help="attached partitions with row and unsealed counts")
    maintain = what.add_parser("maintain", help="create this month's and coming months' partitions")
    maintain.add_argument("--months-ahead", type=int, default=3)
    detach = what.add_parser(
        "detach",
        help="export (COPY to a file, recorded with its SHA-256) and detach every month before"
        " YYYY-MM; refuses a month with unsealed audit entries",
    )
    detach.add_argument("--before", type=_month, required=True, metavar="YYYY-MM")
    detach.add_argument("--export-dir", type=Path, required=True)
    detach.add_argument("--drop", action="store_true", help="drop the detached tables too")
    parts.set_defaults(func=lambda a: run(a, database_url()))
