"""Batching, resuming and reporting an import.

Each batch is all-or-nothing: a batch with a refused row stores nothing and its refused
rows are reported. A committed batch is recorded, by the SHA-256 of its rows' content, in
the same transaction: running the same input again skips it and redoes only what did not
commit; so does the input with its refused rows corrected in place (same batch boundaries).
"""

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.models.base import utcnow
from app.models.imports import MAX_REPORTED_ERRORS, ImportReport, RowError
from app.services.imports.rows import Catalogue, Line, ValidRow, load_catalogue, validate_row
from app.services.imports.staging import store_batch

DEFAULT_BATCH_SIZE = 5000
# A transaction per batch: enter it, and leave it normally to commit or by an exception to
# roll it back (the CLI opens a session per batch; the endpoint a savepoint per batch).
BatchScope = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def savepoints(session: AsyncSession) -> BatchScope:
    """Batches inside one request's transaction: each in its own savepoint."""

    @asynccontextmanager
    async def scope() -> AsyncIterator[AsyncSession]:
        async with session.begin_nested():  # a refused batch rolls back to here
            yield session

    return scope


class _Rejected(Exception):
    """Raised inside a batch's scope so that it rolls back."""


async def _committed(scope: BatchScope) -> set[str]:
    """Hashes of every committed batch (a row per batch: small next to the subjects)."""
    async with scope() as session:
        return set((await session.execute(text("SELECT sha256 FROM import_batches"))).scalars())


def batch_sha256(batch: list[Line]) -> str:
    digest = hashlib.sha256()
    for _, raw in batch:
        if isinstance(raw, RowError):
            digest.update(b"\x00refused")
        else:
            digest.update(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS) + b"\n")
    return digest.hexdigest()


def _batches(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for item in lines:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _checked(loop: Any, validator: Any, batch: Any, catalogue: Any) -> Any:
    """Validate a batch off the event loop: in the command's process pool (whose workers
    were handed the settings), or in a thread that carries this context's settings."""
    if validator is None:
        return await asyncio.to_thread(_validate, batch, catalogue)
    return await loop.run_in_executor(validator, _validate, batch, catalogue)


async def run_import(
    scope: BatchScope,
    principal: Principal | None,
    lines: Iterable[Line],
    *,
    sha256: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[ImportReport], Any] | None = None,
    validator: Executor | None = None,
) -> ImportReport:
    """Validation of the next batch overlaps the storing of this one; batches are stored
    one after the other, in order. Validation runs in `validator` (the CLI gives it a
    process of its own, so that it has a core to itself), or else in a thread."""
    started = time.perf_counter()
    async with scope() as session:
        catalogue = await load_catalogue(session)
    done = await _committed(scope)
    report = ImportReport(
        sha256=sha256, rows=0, imported=0, rejected_rows=0, batch_size=batch_size,
        batches_committed=0, batches_rejected=0,
    )  # fmt: skip
    await _pipeline(
        scope, principal, _batches(lines, batch_size), report,
        catalogue=catalogue, done=done, on_batch=on_batch, validator=validator,
    )  # fmt: skip
    if on_batch is not None:
        on_batch(report)
    report.seconds = round(time.perf_counter() - started, 3)
    report.subjects_per_second = round(report.imported / report.seconds, 1) if report.seconds else 0
    return report


async def _pipeline(
    scope: BatchScope,
    principal: Principal | None,
    batches: Iterator[list[Line]],
    report: ImportReport,
    *,
    catalogue: Catalogue,
    done: set[str],
    on_batch: Callable[[ImportReport], Any] | None,
    validator: Executor | None,
) -> None:
    """Read and validate batch n+1 while batch n is stored; at most one store runs at once."""
    loop = asyncio.get_running_loop()
    storing: asyncio.Task[None] | None = None
    number = 0
    try:
        while True:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            report.rows += len(batch)
            digest = batch_sha256(batch)
            checked = None if digest in done else await _checked(
                loop, validator, batch, catalogue
            )  # fmt: skip
            if storing is not None:
                await storing
            storing = _store_or_skip(scope, principal, batch, checked, report, number, digest)
            number += 1
            if on_batch is not None:
                on_batch(report)
        if storing is not None:
            await storing
    finally:
        if storing is not None and not storing.done():
            storing.cancel()


def _store_or_skip(
    scope: BatchScope,
    principal: Principal | None,
    batch: list[Line],
    checked: tuple[list[ValidRow], list[RowError]] | None,
    report: ImportReport,
    number: int,
    digest: str,
) -> asyncio.Task[None] | None:
    """Start storing a validated batch; one committed before (`checked` None) is skipped."""
    if checked is None:
        report.batches_skipped += 1
        report.already_imported += len(batch)
        return None
    return asyncio.create_task(_store(scope, principal, batch, checked, report, number, digest))


def _note(report: ImportReport, errors: list[RowError]) -> None:
    room = MAX_REPORTED_ERRORS - len(report.errors)
    report.errors.extend(errors[: max(room, 0)])
    report.errors_truncated = report.errors_truncated or len(errors) > room


def _validate(batch: list[Line], catalogue: Catalogue) -> tuple[list[ValidRow], list[RowError]]:
    now = utcnow()
    valid: list[ValidRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for line, raw in batch:
        result = raw if isinstance(raw, RowError) else validate_row(line, raw, catalogue, now)
        if isinstance(result, ValidRow):
            email = result.subject["email"]
            if email in seen:
                errors.append(RowError(line=line, field="email", why="repeats the e-mail of line "
                                       f"{seen[email]}"))  # fmt: skip
                continue
            seen[email] = line
            valid.append(result)
        else:
            errors.extend(result if isinstance(result, list) else [result])
    return valid, errors


async def _store(
    scope: BatchScope,
    principal: Principal | None,
    batch: list[Line],
    checked: tuple[list[ValidRow], list[RowError]],
    report: ImportReport,
    number: int,
    digest: str,
) -> None:
    valid, errors = checked
    if not errors:
        try:
            async with scope() as session:
                errors, bases, consents = await store_batch(
                    session, principal, valid, sha256=digest, input_sha256=report.sha256,
                    batch=number,
                )  # fmt: skip
                if errors:
                    raise _Rejected
        except _Rejected:
            pass
        except IntegrityError:  # a concurrent writer took an e-mail (or this very batch)
            why = "a concurrent write changed the same subjects; run the import again"
            errors = [RowError(line=batch[0][0], field=None, why=why)]
        else:
            report.batches_committed += 1
            report.imported += len(valid)
            report.bases += bases
            report.consents += consents
            return
    refused = {e.line for e in errors}
    report.batches_rejected += 1
    report.rejected_rows += len(refused)
    report.held_back += len(batch) - len(refused)
    _note(report, sorted(errors, key=lambda e: e.line))
