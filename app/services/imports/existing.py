"""Import rows whose e-mail a live subject already has (`on_existing`).

`refuse` (the default, as the API's 409 for POST /v1/subjects) refuses that row alone,
reported by line; `skip` leaves the subject as it is; `update` updates the subject's fields
through the subjects' own write path (`update_subject`: the lock, the audit entry, the
change-feed entry and the clock of PATCH /v1/subjects/{id}). In every mode the rest of the
batch goes in. An existing subject's bases and consents are never imported: a consent
event imported twice would be two events in the ledger; they change through the API.
A row that would change nothing writes nothing (no audit entry, no feed entry for sync)."""

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.errors import ProblemError
from app.models.imports import ExistingRow, RowError
from app.models.subject import SubjectUpdate
from app.services.imports.rows import ValidRow
from app.services.subjects import records as subjects

OnExisting = Literal["refuse", "skip", "update"]
ON_EXISTING: tuple[str, ...] = get_args(OnExisting)
TAKEN = "a live subject already has this e-mail"
# The e-mail is how the row found its subject: the other fields are what may change.
UPDATABLE = tuple(f for f in subjects.IMPORTED_FIELDS if f != "email")


@dataclass
class Settled:
    """A batch's rows sorted out: `new` go in as subjects; the others are done here."""

    new: list[ValidRow]
    refused: list[RowError] = field(default_factory=list)
    existing: list[ExistingRow] = field(default_factory=list)
    updated: int = 0
    skipped: int = 0

    def skip(self, row: ValidRow, why: str) -> None:
        self.skipped += 1
        self.existing.append(ExistingRow(line=row.line, outcome="skipped", why=_left(row, why)))


def _left(row: ValidRow, why: str) -> str:
    """Why, and that the row's bases and consents were not imported, if it had any."""
    if row.bases or row.consents:
        return f"{why}; its bases and consents were not imported (record them through the API)"
    return why


def given_fields(raw: Any) -> set[str]:
    """The subject fields a row names (a CSV's empty cell names none): only those update."""
    return set(raw) & set(UPDATABLE) if isinstance(raw, dict) else set()


async def _update(
    session: AsyncSession,
    principal: Principal | None,
    row: ValidRow,
    found: dict[str, Any],
    given: set[str],
    settled: Settled,
) -> None:
    changed = {f: row.subject[f] for f in sorted(given) if row.subject[f] != found[f]}
    if not changed:
        settled.skip(row, f"{TAKEN}; nothing to update")
        return
    subject_id: uuid.UUID = found["id"]
    try:
        await subjects.update_subject(
            session,
            principal,  # type: ignore[arg-type]  # None: the audit names the system
            subject_id=subject_id,
            data=SubjectUpdate.model_validate(changed),
        )
    except ProblemError as exc:  # erased or changed meanwhile: this row only
        settled.refused.append(RowError(line=row.line, field=None, why=exc.detail or exc.title))
        return
    settled.updated += 1
    settled.existing.append(
        ExistingRow(line=row.line, outcome="updated", fields=list(changed), why=_left(row, TAKEN))
    )


async def settle(
    session: AsyncSession,
    principal: Principal | None,
    rows: list[ValidRow],
    raw: dict[int, Any],
    on_existing: OnExisting,
) -> Settled:
    """Sort a validated batch: rows for new subjects are returned to be inserted; each
    row whose e-mail a live subject has is refused, skipped or applied as an update.
    `raw`: the rows as read, by line (which fields each names)."""
    found = await subjects.live_by_emails(session, [r.subject["email"] for r in rows])
    settled = Settled(new=[r for r in rows if r.subject["email"] not in found])
    for row in rows:
        subject = found.get(row.subject["email"])
        if subject is None:
            continue
        if on_existing == "refuse":
            settled.refused.append(RowError(line=row.line, field="email", why=TAKEN))
        elif on_existing == "skip":
            settled.skip(row, TAKEN)
        else:
            given = given_fields(raw.get(row.line))
            await _update(session, principal, row, subject, given, settled)
    return settled
