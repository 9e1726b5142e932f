"""Reading and validating import rows with the API's own models and catalogue rules."""

import csv
import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import email_hash
from app.models.consent import ConsentEventCreate
from app.models.imports import ImportedBasis, RowError, SubjectImportRow
from app.services.bases.records import _value as basis_value
from app.services.consent.events import CLOCK_SKEW

SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
CSV_COLUMNS = frozenset(SubjectImportRow.model_fields)
JSON_COLUMNS = ("bases", "consents")
# The API's models, called through their pydantic validators: the same rules, without
# SQLModel's per-call wrapper (4x the cost of the validation itself for small models).
ROW = SubjectImportRow.__pydantic_validator__
CONSENT = ConsentEventCreate.__pydantic_validator__


class InputError(ValueError):
    """The input as a whole cannot be read (e.g. a CSV header with unknown columns)."""


@dataclass
class Catalogue:
    categories: set[str]
    sources: set[str]
    purposes: dict[str, set[str]]  # key -> allowed bases
    policies: set[str]
    recipients: set[str]


async def load_catalogue(session: AsyncSession) -> Catalogue:
    async def keys(sql: str) -> set[str]:
        return {r[0] for r in await session.execute(text(sql))}

    purposes = {
        r[0]: set(r[1])
        for r in await session.execute(text("SELECT key, allowed_bases FROM purposes"))
    }
    return Catalogue(
        categories=await keys("SELECT key FROM categories"),
        sources=await keys("SELECT key FROM sources"),
        purposes=purposes,
        policies=await keys("SELECT version FROM policies"),
        recipients=await keys("SELECT key FROM recipients"),
    )


@dataclass
class ValidRow:
    line: int
    subject: dict[str, Any]
    bases: list[dict[str, Any]] = field(default_factory=list)
    consents: list[dict[str, Any]] = field(default_factory=list)


def _field(loc: Iterable[Any]) -> str | None:
    # A key the client invented could itself carry personal data: only safe names echo.
    parts = [str(p) if isinstance(p, int) or SAFE_NAME.match(str(p)) else "?" for p in loc]
    return ".".join(parts) or None


def _errors(line: int, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[RowError]:
    return [
        RowError(line=line, field=_field(prefix + tuple(e["loc"])), why=e["msg"])
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _check_basis(line: int, i: int, basis: ImportedBasis, cat: Catalogue) -> list[RowError]:
    allowed = cat.purposes.get(basis.purpose)
    where = f"bases.{i}"
    if allowed is None:
        return [RowError(line=line, field=f"{where}.purpose", why="unknown purpose")]
    if basis.basis not in allowed:
        why = "the purpose may rest only on: " + ", ".join(sorted(allowed))
        return [RowError(line=line, field=f"{where}.basis", why=why)]
    return []


def _consent(
    line: int, i: int, item: Any, subject_id: uuid.UUID, cat: Catalogue, now: datetime
) -> tuple[ConsentEventCreate | None, list[RowError]]:
    where = f"consents.{i}"
    if not isinstance(item, dict):
        return None, [RowError(line=line, field=where, why="must be an object")]
    if "email" in item or "subject_id" in item:
        return None, [RowError(line=line, field=where, why="the row's e-mail is used; omit it")]
    try:
        # For the subject this row creates (its e-mail is validated once, with the row).
        event = CONSENT.validate_python(
            {**item, "subject_id": subject_id, "method": item.get("method", "import")}
        )
    except ValidationError as exc:
        return None, _errors(line, exc, ("consents", i))
    problems = []
    if event.purpose not in cat.purposes:
        problems.append(RowError(line=line, field=f"{where}.purpose", why="unknown purpose"))
    if event.policy_version is not None and event.policy_version not in cat.policies:
        problems.append(
            RowError(line=line, field=f"{where}.policy_version", why="unknown policy version")
        )
    if event.recipient is not None and event.recipient not in cat.recipients:
        problems.append(RowError(line=line, field=f"{where}.recipient", why="unknown recipient"))
    if event.method == "gpc":
        why = "a GPC signal is sent live (POST /v1/consent-events), not imported"
        problems.append(RowError(line=line, field=f"{where}.method", why=why))
    if event.occurred_at is not None and event.occurred_at > now + CLOCK_SKEW:
        problems.append(RowError(line=line, field=f"{where}.occurred_at", why="in the future"))
    return event, problems


def _subject_problems(line: int, row: SubjectImportRow, cat: Catalogue) -> list[RowError]:
    """What the catalogue refuses in the subject and its bases (the consents come after)."""
    problems = []
    if row.category not in cat.categories:
        problems.append(RowError(line=line, field="category", why="unknown category"))
    if row.source not in cat.sources:
        problems.append(RowError(line=line, field="source", why="unknown source"))
    seen: set[str] = set()
    for i, basis in enumerate(row.bases):
        problems += _check_basis(line, i, basis, cat)
        if basis.purpose in seen:
            problems.append(RowError(line=line, field=f"bases.{i}.purpose", why="given twice"))
        seen.add(basis.purpose)
    return problems


def _checked_consents(
    line: int,
    row: SubjectImportRow,
    subject_id: uuid.UUID,
    cat: Catalogue,
    now: datetime,
    problems: list[RowError],
) -> list[ConsentEventCreate]:
    """The row's consents that parse; every reason to refuse one is added to `problems`."""
    events = []
    for i, item in enumerate(row.consents):
        event, errs = _consent(line, i, item, subject_id, cat, now)
        problems += errs
        if event is not None:
            events.append(event)
    return events


def _valid_row(
    line: int,
    row: SubjectImportRow,
    subject_id: uuid.UUID,
    events: list[ConsentEventCreate],
    now: datetime,
) -> ValidRow:
    """The values to store, in the shape the staging tables take."""
    subject = row.model_dump(exclude={"bases", "consents"})
    subject["id"] = subject_id
    subject["email_hash"] = email_hash(row.email)
    bases = [
        {**b.model_dump(exclude={"purpose"}), "purpose": b.purpose, "value": basis_value(b)}
        for b in row.bases
    ]
    consents = [
        {
            **e.model_dump(exclude={"subject_id", "email", "evidence"}),
            "evidence": e.evidence.model_dump() if e.evidence else {},
            "notice_sha256": (
                hashlib.sha256(e.notice_text.encode()).hexdigest() if e.notice_text else None
            ),
            "occurred_at": e.occurred_at or now,
        }
        for e in events
    ]
    return ValidRow(line=line, subject=subject, bases=bases, consents=consents)


def validate_row(line: int, raw: Any, cat: Catalogue, now: datetime) -> ValidRow | list[RowError]:
    """The row as values to store, or every reason it is refused."""
    if not isinstance(raw, dict):
        return [RowError(line=line, field=None, why="each row must be a JSON object")]
    try:
        row = ROW.validate_python(raw)
    except ValidationError as exc:
        return _errors(line, exc)
    problems = _subject_problems(line, row, cat)
    subject_id = uuid.uuid4()
    events = _checked_consents(line, row, subject_id, cat, now, problems)
    if problems:
        return problems
    return _valid_row(line, row, subject_id, events, now)


Line = tuple[int, Any]  # (line number, parsed object) or (line number, RowError)


def ndjson_rows(lines: Iterable[bytes], on_bytes: Callable[[int], None]) -> Iterator[Line]:
    for number, raw in enumerate(lines, start=1):
        on_bytes(len(raw))
        if not raw.strip():
            continue
        try:
            yield number, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # The same words as a request body's (app.core.errors.not_json_detail).
            where = f"not valid JSON at line {number}, column {exc.colno}"
            yield number, RowError(line=number, field=None, why=where)


def csv_rows(stream: IO[bytes], on_bytes: Callable[[int], None]) -> Iterator[Line]:
    """CSV with a header of SubjectImportRow's fields; empty cells are absent; the `bases`
    and `consents` cells hold JSON arrays."""

    def decoded() -> Iterator[str]:
        for raw in stream:
            on_bytes(len(raw))
            yield raw.decode("utf-8-sig", errors="replace")

    reader = csv.reader(decoded())
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        shown = ", ".join(h if SAFE_NAME.match(h) else "?" for h in unknown)
        raise InputError(
            f"unknown CSV column(s): {shown}; allowed: {', '.join(sorted(CSV_COLUMNS))}"
        )
    start = reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            yield line, RowError(line=line, field=None, why="more cells than columns")
            continue
        row: dict[str, Any] = {h: c for h, c in zip(header, cells, strict=False) if c.strip()}
        bad = None
        for column in JSON_COLUMNS:
            if column in row:
                try:
                    row[column] = orjson.loads(row[column])
                except orjson.JSONDecodeError:
                    bad = column
        if bad is not None:
            yield line, RowError(line=line, field=bad, why="not a valid JSON array")
            continue
        yield line, row
