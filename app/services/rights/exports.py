"""Exports of completed access and portability requests (JSON; CSV for portability)."""

import csv
import io
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, Unprocessable
from app.models.subject import PERSONAL_FIELDS
from app.services.rights.requests import get_request


def csv_cell(value: Any) -> str:
    """A spreadsheet would run a cell starting with = + - @ as a formula: quote it."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export(session: AsyncSession, *, request_id: uuid.UUID, fmt: str) -> tuple[str, Any]:
    """(media type, content) for a completed access or portability request."""
    req = await get_request(session, request_id)
    if req.type not in ("access", "portability"):
        raise Unprocessable("Only access and portability requests have an export.")
    if req.status != "completed" or not req.result:
        raise Conflict("The request is not completed.")
    if "report" not in req.result:
        raise Conflict(
            "The report was withdrawn after a rectification or erasure changed the data it "
            "held; make a new access or portability request for a current copy."
        )
    report = req.result["report"]
    if fmt == "json":
        return "application/json", report
    if req.type != "portability":
        raise Unprocessable("CSV is offered for portability; the access report is JSON.")
    if report.get("data") is None:
        raise Conflict(report.get("refused") or "Nothing is portable.")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(PERSONAL_FIELDS))
    writer.writeheader()
    writer.writerow({f: csv_cell(report["data"].get(f)) for f in PERSONAL_FIELDS})
    return "text/csv", out.getvalue()
