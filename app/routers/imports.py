"""Bulk import of subjects (crm): NDJSON in, the import report out."""

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import ProblemError, problem_responses
from app.models.imports import ImportReport
from app.services.imports.rows import ndjson_rows
from app.services.imports.runner import run_import, savepoints

IMPORT_PATH = "/v1/subjects/import"
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
Writer = Annotated[Principal, Depends(require("subjects:write"))]


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


@router.post(
    "/import",
    response_model=ImportReport,
    responses=problem_responses(401, 403, 413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "One subject per line: the fields of POST /v1/subjects, plus"
            " optional `bases` (LawfulBasisSet with `purpose`) and `consents` (consent events"
            " without `subject_id`/`email`; `method` defaults to `import`). Up to"
            " CONSENT_IMPORT_MAX_BYTES.",
            # Bytes, not a JSON string: generated clients send the body as they are given it.
            "content": {"application/x-ndjson": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def import_subjects(request: Request, session: SessionDep, principal: Writer) -> ImportReport:
    """Import subjects with their bases and consents, all-or-nothing per batch as to invalid
    rows; a row whose e-mail a live subject already has is refused on its own. The report
    lists refused rows (line, field, why: never the value). Sending the same body again
    skips the batches already stored."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in NDJSON_TYPES:
        raise UnsupportedMediaType("Send NDJSON (Content-Type: application/x-ndjson).")
    body = await request.body()
    return await run_import(
        savepoints(session),
        principal,
        ndjson_rows(body.splitlines(), lambda _n: None),
        sha256=hashlib.sha256(body).hexdigest(),
        batch_size=request.app.state.settings.import_batch_size,
    )
