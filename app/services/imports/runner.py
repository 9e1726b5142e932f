"""Batching, resuming and reporting an import.

Each batch is all-or-nothing as to invalid rows: a batch with a row that fails validation
stores nothing and its refused rows are reported. A row whose e-mail a live subject already
has is different: it alone is refused, skipped or applied as an update (`on_existing`, see
`existing`), and the rest of its batch goes in. A committed batch is recorded, by the
SHA-256 of its rows' content (and the `on_existing` mode, unless the default), in the same
transaction: running the same input again skips it and redoes only what did not commit;
so does the input with its invalid rows corrected in place (same batch boundaries).
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
from app.services.imports.existing import OnExisting, Settled, settle
from app.services.imports.rows import Catalogue, Line, ValidRow, load_catalogue, validate_row
from app.services.imports.staging import store_batch

DEFAULT_BATCH_SIZE = 5000
# A bulk load leaves the planner's statistics describing the tables as they were before it:
# autovacuum refreshes them only on its next round (a minute or more later; on a long import,
# part-way through), and until then the gate plans for tables a fraction of their size.
# Measured on 50,000 imported subjects: an audience chunk of 5,000 took 1.8 s before an
# ANALYZE and 0.12 s after. So an import that stored this many subjects or more ends with an
# ANALYZE of the tables it wrote that the gate, the clock and the feed read (a sample of each
# table: well under a second at a million subjects).
ANALYZE_FROM_SUBJECTS = 1000
ANALYZED_AFTER_IMPORT = (
    "subjects", "lawful_bases", "lawful_basis_history", "consent_events", "consent_state",
    "changes", "gate_moments",
)  # fmt: skip
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


def batch_sha256(batch: list[Line], on_existing: OnExisting = "refuse") -> str:
    digest = hashlib.sha256()
    for _, raw in batch:
        if isinstance(raw, RowError):
            digest.update(b"\x00refused")
        else:
            digest.update(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS) + b"\n")
    if on_existing != "refuse":
        # A batch stored under the default may have refused an existing e-mail: the same
        # input run again to skip or update it must redo the batch, not skip it.
        digest.update(f"\x00on_existing={on_existing}".encode())
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
    on_existing: OnExisting = "refuse",
) -> ImportReport:
    """Validation of the next batch overlaps the storing of this one; batches are stored
    one after the other, in order. Validation runs in `validator` (the CLI gives it a
    process of its own, so that it has a core to itself), or else in a thread.
    `on_existing`: what a row whose e-mail a live subject has does (`existing`)."""
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
        on_existing=on_existing,
    )  # fmt: skip
    await _refresh_statistics(scope, report)
    if on_batch is not None:
        on_batch(report)
    report.seconds = round(time.perf_counter() - started, 3)
    report.subjects_per_second = round(report.imported / report.seconds, 1) if report.seconds else 0
    return report


async def _refresh_statistics(scope: BatchScope, report: ImportReport) -> None:
    """ANALYZE after a bulk load (see ANALYZE_FROM_SUBJECTS); timed as part of the import."""
    if report.imported >= ANALYZE_FROM_SUBJECTS:
        async with scope() as session:
            await session.execute(text(f"ANALYZE {', '.join(ANALYZED_AFTER_IMPORT)}"))


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
    on_existing: OnExisting,
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
            digest = batch_sha256(batch, on_existing)
            checked = None if digest in done else await _checked(
                loop, validator, batch, catalogue
            )  # fmt: skip
            if storing is not None:
                await storing
            storing = _store_or_skip(
                scope, principal, batch, checked, report, number, digest, on_existing
            )  # fmt: skip
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
    on_existing: OnExisting,
) -> asyncio.Task[None] | None:
    """Start storing a validated batch; one committed before (`checked` None) is skipped."""
    if checked is None:
        report.batches_skipped += 1
        report.already_imported += len(batch)
        return None
    return asyncio.create_task(
        _store(scope, principal, batch, checked, report, number, digest, on_existing)
    )


def _note(report: ImportReport, errors: list[RowError]) -> None:
    room = MAX_REPORTED_ERRORS - len(report.errors)
    report.errors.extend(errors[: max(room, 0)])
    report.errors_truncated = report.errors_truncated or len(errors) > room


def _committed_batch(report: ImportReport, settled: Settled, bases: int, consents: int) -> None:
    """A stored batch counted: its new subjects, and its rows of existing e-mails."""
    report.batches_committed += 1
    report.imported += len(settled.new)
    report.bases += bases
    report.consents += consents
    report.updated += settled.updated
    report.skipped += settled.skipped
    report.rejected_rows += len({e.line for e in settled.refused})
    _note(report, settled.refused)
    room = max(MAX_REPORTED_ERRORS - len(report.existing), 0)
    report.existing.extend(settled.existing[:room])


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
    on_existing: OnExisting,
) -> None:
    valid, errors = checked
    if not errors:
        try:
            async with scope() as session:
                settled = await settle(session, principal, valid, dict(batch), on_existing)
                errors, bases, consents = await store_batch(
                    session, principal, settled.new, sha256=digest,
                    input_sha256=report.sha256, batch=number,
                )  # fmt: skip
                if errors:
                    raise _Rejected
        except _Rejected:
            pass
        except IntegrityError:  # a concurrent writer took an e-mail (or this very batch)
            why = "a concurrent write changed the same subjects; run the import again"
            errors = [RowError(line=batch[0][0], field=None, why=why)]
        else:
            _committed_batch(report, settled, bases, consents)
            return
    refused = {e.line for e in errors}
    report.batches_rejected += 1
    report.rejected_rows += len(refused)
    report.held_back += len(batch) - len(refused)
    _note(report, sorted(errors, key=lambda e: e.line))
