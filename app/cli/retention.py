"""`consent-api sweep`: erase the subjects whose retention period has ended (or, with
--dry-run, only say which), with a progress bar on a terminal and a short report."""

import argparse
import asyncio
import json
from typing import Any

from app.cli.common import cli_principal, database_url, in_transaction
from app.core.config import Settings, current_settings


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
    if args.dry_run:
        report = asyncio.run(in_transaction(url, settings, sweep.dry_run))
        report = json.loads(json.dumps(report, default=str))
    else:
        report = asyncio.run(_sweep_run(url, settings))
    _print_sweep(report, as_json=args.json)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sweep = sub.add_parser("sweep", help="erase subjects whose retention period has ended")
    sweep.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    sweep.add_argument("--json", action="store_true", help="print the whole report as JSON")
    sweep.set_defaults(func=_sweep)
