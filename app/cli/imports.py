"""`consent-api import subjects FILE`: bulk import with a progress bar and a report."""

import argparse
import asyncio
import hashlib
import multiprocessing
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from app.cli.common import database_url
from app.core.config import Settings, current_settings, use_settings
from app.models.imports import ImportReport


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _format(path: Path, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.suffix.lower() == ".csv" else "ndjson"


def _batches(maker: Any) -> Callable[[], AbstractAsyncContextManager[object]]:
    """A session per batch, committed when the batch is stored."""

    @asynccontextmanager
    async def batch() -> AsyncIterator[object]:
        async with maker() as session:
            yield session
            await session.commit()  # the CLI command is the commit point, one per batch

    return batch


def _progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[summary]}"),
        TimeRemainingColumn(),
        disable=not sys.stderr.isatty(),
        console=None,
    )


def _validator(settings: Settings) -> ProcessPoolExecutor:
    """Validation (the API's own models, per row) is the import's heaviest Python: in a
    process of its own it overlaps reading and storing instead of sharing one GIL. That
    worker starts afresh (forkserver): the command hands it its settings."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=use_settings,
        initargs=(settings,),
    )


async def _run(url: str, settings: Settings, args: argparse.Namespace) -> ImportReport:
    from app.core.db import create_engine, create_sessionmaker
    from app.services.imports.rows import csv_rows, ndjson_rows
    from app.services.imports.runner import run_import

    path: Path = args.file
    engine = create_engine(url, settings)
    batch = _batches(create_sessionmaker(engine))
    progress = _progress_bar()
    task = progress.add_task("import", total=path.stat().st_size, summary="")  # noqa: ASYNC240

    def advance(n: int) -> None:
        progress.advance(task, n)

    def on_batch(report: ImportReport) -> None:
        summary = f"{report.imported:,} imported, {report.rejected_rows:,} refused"
        progress.update(task, summary=summary)

    validator = _validator(settings)
    try:
        with progress, validator, path.open("rb") as stream:
            lines = (
                csv_rows(stream, advance)
                if _format(path, args.format) == "csv"
                else ndjson_rows(stream, advance)
            )
            return await run_import(
                batch,  # type: ignore[arg-type]
                None,
                lines,
                sha256=_sha256(path),
                batch_size=args.batch_size,
                on_batch=on_batch,
                validator=validator,
            )
    finally:
        await engine.dispose()


def _print_report(report: ImportReport) -> None:
    for error in report.errors:
        print(f"line {error.line}: {error.field or '(row)'}: {error.why}", file=sys.stderr)
    print(
        f"{report.rows:,} rows: {report.imported:,} subjects imported "
        f"({report.bases:,} bases, {report.consents:,} consent events) in {report.seconds:.2f} s"
        f" = {report.subjects_per_second:,.0f} subjects/s; {report.already_imported:,} already"
        f" imported; {report.rejected_rows:,} rows refused, {report.held_back:,} held back with"
        f" them ({report.batches_rejected} of "
        f"{report.batches_committed + report.batches_rejected + report.batches_skipped}"
        " batches)"
    )


def _import_subjects(args: argparse.Namespace) -> None:
    from app.services.imports.rows import InputError

    settings = current_settings()
    url = database_url(settings)
    if not args.file.is_file():
        raise SystemExit(f"consent-api: no file at {args.file}")
    try:
        report = asyncio.run(_run(url, settings, args))
    except InputError as exc:
        raise SystemExit(f"consent-api: {exc}") from exc
    if args.report:
        Path(args.report).write_bytes(
            orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        )
    _print_report(report)
    if report.rejected_rows:
        raise SystemExit(
            "consent-api: some rows were refused (listed above); correct them in place and run"
            " the same command again: batches already stored are skipped"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.services.imports.runner import DEFAULT_BATCH_SIZE

    imp = sub.add_parser("import", help="bulk import (CRM onboarding)")
    what = imp.add_subparsers(dest="import_command", required=True)
    subjects = what.add_parser(
        "subjects",
        help="import subjects with optional bases and consents from CSV or NDJSON",
    )
    subjects.add_argument("file", type=Path)
    subjects.add_argument("--format", choices=("csv", "ndjson"), default=None)
    subjects.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    subjects.add_argument("--report", help="also write the full report as JSON to this file")
    subjects.set_defaults(func=_import_subjects)
