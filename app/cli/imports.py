"""`consent-api import subjects FILE`: bulk import with a progress bar (in rows) and a
report: rows inserted, updated, skipped and refused, each refused row by line and field."""

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


def _sha256_and_lines(path: Path) -> tuple[str, int]:
    """The file's SHA-256 and its number of lines, in one pass (the bar's total)."""
    digest = hashlib.sha256()
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return digest.hexdigest(), lines + (last != b"\n")  # a last line without its newline


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


def _processed(report: ImportReport) -> int:
    """Rows whose outcome is known: every row of every batch stored, refused or skipped."""
    return (
        report.imported + report.updated + report.skipped + report.rejected_rows
        + report.held_back + report.already_imported
    )  # fmt: skip


def _summary(report: ImportReport) -> str:
    return (
        f"{report.imported:,} inserted, {report.updated:,} updated, {report.skipped:,} skipped,"
        f" {report.rejected_rows:,} refused"
    )


class RowProgress:
    """The bar counts rows: its total is the file's lines (less a CSV's header), and it
    moves as each batch's rows are stored, refused or skipped; at the end it shows the rows
    there were (blank lines are none)."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = console or Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[summary]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.bar.add_task("import", total=max(total, 0), summary="")

    def on_batch(self, report: ImportReport) -> None:
        self.bar.update(self.task, completed=_processed(report), summary=_summary(report))

    def finish(self, report: ImportReport) -> None:
        done = _processed(report)
        self.bar.update(self.task, total=done, completed=done, summary=_summary(report))


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
    csv = _format(path, args.format) == "csv"
    sha256, lines = _sha256_and_lines(path)
    engine = create_engine(url, settings)
    batch = _batches(create_sessionmaker(engine))
    progress = RowProgress(lines - 1 if csv else lines)  # a CSV's header is no row
    validator = _validator(settings)
    try:
        with progress.bar, validator, path.open("rb") as stream:
            read = csv_rows if csv else ndjson_rows
            report = await run_import(
                batch,  # type: ignore[arg-type]
                None,
                read(stream, lambda _bytes: None),
                sha256=sha256,
                batch_size=args.batch_size,
                on_batch=progress.on_batch,
                validator=validator,
                on_existing=args.on_existing,
            )
            progress.finish(report)
            return report
    finally:
        await engine.dispose()


def _print_report(report: ImportReport, *, shown: int = 20) -> None:
    """Refused rows on stderr (each), skipped and updated ones on stdout (the first
    `shown`; --report lists them all), then the counts. Never a value from the file."""
    for error in report.errors:
        print(f"line {error.line}: {error.field or '(row)'}: {error.why}", file=sys.stderr)
    for row in report.existing[:shown]:
        fields = f" ({', '.join(row.fields)})" if row.fields else ""
        print(f"line {row.line}: {row.outcome}{fields}: {row.why}")
    more = report.updated + report.skipped - min(len(report.existing), shown)
    if more > 0:
        print(f"... and {more:,} more skipped or updated (--report FILE lists them)")
    batches = report.batches_committed + report.batches_rejected + report.batches_skipped
    counts = [f"{report.rows:,} rows: {_summary(report)}"]
    if report.batches_rejected:
        counts.append(
            f"{report.held_back:,} valid rows held back with them"
            f" ({report.batches_rejected} of {batches} batches refused)"
        )
    if report.already_imported:
        counts.append(f"{report.already_imported:,} already imported")
    print("; ".join(counts))
    print(
        f"{report.imported:,} subjects imported ({report.bases:,} bases, {report.consents:,}"
        f" consent events) in {report.seconds:.2f} s = {report.subjects_per_second:,.0f}"
        " subjects/s"
    )


def _refused_advice(report: ImportReport) -> str:
    """What to do about the refused rows, in one line."""
    from app.services.imports.existing import TAKEN

    advice = []
    if any(e.why == TAKEN for e in report.errors):
        advice.append(
            "rows whose e-mail a live subject already has were refused: run the same command"
            " with --on-existing skip (leave those subjects) or update (update their fields)"
        )
    if any(e.why != TAKEN for e in report.errors) or report.held_back:
        advice.append(
            "correct the other refused rows in place and run the same command again:"
            " batches already stored are skipped"
        )
    return "; ".join(advice) or "some rows were refused (listed above)"


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
        raise SystemExit(f"consent-api: {_refused_advice(report)}")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.services.imports.existing import ON_EXISTING
    from app.services.imports.runner import DEFAULT_BATCH_SIZE

    imp = sub.add_parser("import", help="bulk import (CRM onboarding)")
    what = imp.add_subparsers(dest="import_command", required=True)
    subjects = what.add_parser(
        "subjects",
        help="import subjects with optional bases and consents from CSV or NDJSON",
    )
    subjects.add_argument(
        "file", type=Path, help="the CSV (with a header) or NDJSON file, one subject a row"
    )
    subjects.add_argument(
        "--format",
        choices=("csv", "ndjson"),
        default=None,
        help="the file's format (default: csv for a .csv file, otherwise ndjson)",
    )
    subjects.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="rows per transaction; a batch with an invalid row stores nothing"
        " (default: %(default)s)",
    )
    subjects.add_argument(
        "--on-existing",
        choices=ON_EXISTING,
        default="refuse",
        help="a row whose e-mail a live subject already has: refuse that row (the default),"
        " skip it (the subject stays as it is), or update the subject's fields named in it"
        " (never its bases or consents); the rest of its batch goes in either way",
    )
    subjects.add_argument("--report", help="also write the full report as JSON to this file")
    subjects.set_defaults(func=_import_subjects)
