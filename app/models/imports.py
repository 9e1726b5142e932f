"""Bulk import of subjects (CRM onboarding): the row shape, the report, the checkpoint.

A row is a `SubjectCreate` plus optional lawful bases (each a `LawfulBasisSet` naming its
purpose) and consent events (each validated as a `ConsentEventCreate` for the row's e-mail):
the API's own models, so an imported row obeys exactly the rules of the API.
"""

from datetime import datetime
from typing import Any, Literal

from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field, utcnow
from app.models.basis import LawfulBasisSet
from app.models.catalogue import KEY_PATTERN
from app.models.subject import SubjectCreate

MAX_ITEMS_PER_ROW = 50
MAX_REPORTED_ERRORS = 1000


class ImportedBasis(LawfulBasisSet):
    purpose: str = Field(max_length=63, regex=KEY_PATTERN)


class SubjectImportRow(SubjectCreate):
    bases: list[ImportedBasis] = Field(default_factory=list, max_length=MAX_ITEMS_PER_ROW)
    # Each item is a consent event without `subject_id`/`email` (the row's e-mail is used);
    # `method` defaults to `import`. Validated one by one as a ConsentEventCreate.
    consents: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ITEMS_PER_ROW)


class RowError(SQLModel):
    """Why a row was refused. Never the value itself: it may be personal data."""

    line: int = Field(description="1-based line of the file or body (a CSV header is line 1)")
    field: str | None = Field(description="e.g. `email`, `bases.0.lia_ref`; null: the row")
    why: str


class ExistingRow(SQLModel):
    """A row whose e-mail a live subject already has, and what the import did with it (a
    refused one is among the errors). Never the value itself."""

    line: int = Field(description="1-based line of the file or body (a CSV header is line 1)")
    outcome: Literal["skipped", "updated"]
    fields: list[str] = Field(default_factory=list, description="the subject fields updated")
    why: str


class ImportReport(SQLModel):
    sha256: str = Field(description="SHA-256 of the file or body")
    rows: int = Field(description="data rows read")
    imported: int = Field(description="subjects created by this run")
    updated: int = Field(
        default=0, description="existing subjects whose fields this run updated (`update`)"
    )
    skipped: int = Field(
        default=0,
        description="rows whose e-mail a live subject has, left as they were (on_existing skip,"
        " or update with nothing to change)",
    )
    already_imported: int = Field(
        default=0, description="rows in batches committed by an earlier run of the same input"
    )
    rejected_rows: int = Field(description="rows with at least one error")
    held_back: int = Field(
        default=0, description="valid rows not imported because their batch had a rejected row"
    )
    batch_size: int
    batches_committed: int
    batches_rejected: int
    batches_skipped: int = Field(default=0, description="committed by an earlier run: not redone")
    bases: int = Field(default=0, description="lawful bases recorded by this run")
    consents: int = Field(default=0, description="consent events recorded by this run")
    errors: list[RowError] = Field(default_factory=list)
    existing: list[ExistingRow] = Field(
        default_factory=list,
        description=f"the skipped and updated rows, by line (the first {MAX_REPORTED_ERRORS})",
    )
    errors_truncated: bool = Field(
        default=False, description=f"more than {MAX_REPORTED_ERRORS} errors"
    )
    seconds: float = 0.0
    subjects_per_second: float = 0.0


class ImportBatch(SQLModel, table=True):
    """A committed batch, by the SHA-256 of its rows' content: running the same input again
    (or the input with refused rows corrected in place) skips the batches already stored."""

    __tablename__ = "import_batches"

    sha256: str = Field(primary_key=True, max_length=64)
    input_sha256: str = Field(max_length=64)
    batch: int
    rows: int
    committed_at: datetime = timestamp_field(default_factory=utcnow)
