"""`consent-api sweep`: say which subjects' retention period has ended (a dry run, the
default, as `POST /v1/retention/sweep` defaults to one) or, with --apply, erase them, with a
progress bar on a terminal and a short report."""

import argparse
import asyncio
import json
import sys
from typing import Any

from app.cli.common import cli_principal, database_url, in_transaction
from app.core.config import Settings, current_settings


def _headline(report: dict[str, Any]) -> str:
    if report["dry_run"]:
        would = report["due"] - report["held_back"]
        return (
            f"Dry run as of {report['as_of']}: {report['due']} due, {would} would be erased,"
            f" {report['held_back']} held back. Nothing was erased."
        )
    return (
        f"Sweep {report['sweep_id']} as of {report['as_of']}: {report['due']} due,"
        f" {report['erased']} erased, {report['held_back']} held back."
    )


def _apply_hint(report: dict[str, Any]) -> str | None:
    """What a dry run leaves to do, in one line; None when nothing would be erased."""
    would = report["due"] - report["held_back"]
    if not report["dry_run"] or would == 0:
        return None
    return f"Run `consent-api sweep --apply` to erase the {would} subject{'s' * (would != 1)}."


def _print_sweep(report: dict[str, Any], *, as_json: bool, shown: int = 20) -> None:
    if as_json:  # stdout stays one JSON document; the hint goes to stderr
        print(json.dumps(report, default=str))
        if hint := _apply_hint(report):
            print(hint, file=sys.stderr)
        return
    print(_headline(report))
    for item in report["items"][:shown]:
        why = ", ".join(item["held_back"]) or ("would erase" if report["dry_run"] else "erased")
        print(
            f"  {item['subject_id']}  {item['category']:<22} {item['rule']:<18}"
            f" due {item['due_at']}  {why}"
        )
    if len(report["items"]) > shown:
        print(f"  ... and {len(report['items']) - shown} more (--json lists every one)")
    if hint := _apply_hint(report):
        print(hint)


async def _sweep_run(url: str, settings: Settings) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from app.core.db import create_engine, create_sessionmaker
    from app.services.retention import sweep

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
                cli_principal(),
                batch_size=settings.retention_sweep_batch,
                progress=lambda n: bar.advance(task, n),
                on_total=lambda total: bar.update(task, total=total),
            )
    finally:
        await engine.dispose()
    return report.model_dump(mode="json")


def _sweep(args: argparse.Namespace) -> None:
    from app.services.retention import sweep

    settings = current_settings()
    url = database_url(settings)
    if not args.apply:  # a dry run unless asked, as the HTTP sweep
        report = asyncio.run(in_transaction(url, settings, sweep.dry_run))
        report = json.loads(json.dumps(report, default=str))
    else:
        report = asyncio.run(_sweep_run(url, settings))
    _print_sweep(report, as_json=args.json)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sweep = sub.add_parser(
        "sweep",
        help="list (or, with --apply, erase) subjects whose retention period has ended",
        description="Without --apply, a dry run: lists the subjects due for erasure and why"
        " any is held back, and changes nothing. With --apply, erases those nothing holds"
        " back, in batches, each audited.",
    )
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument(
        "--apply", action="store_true", help="erase the due subjects (the default is a dry run)"
    )
    mode.add_argument(
        "--dry-run", action="store_true", help="report only, change nothing (the default)"
    )
    sweep.add_argument("--json", action="store_true", help="print the whole report as JSON")
    sweep.set_defaults(func=_sweep)
