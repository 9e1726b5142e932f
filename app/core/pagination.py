"""Keyset pagination: `limit` (max 1000) and an opaque `cursor`."""

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from app.core.errors import Unprocessable

T = TypeVar("T")
R = TypeVar("R")
MAX_LIMIT = 1000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (max 1000)")]
Cursor = Annotated[str | None, Query(max_length=500, description="Opaque cursor from next_cursor")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    """The keyset values a cursor carries; a malformed cursor is a 422, never a 500."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except ValueError as exc:
        raise Unprocessable("The cursor is not valid.") from exc
    if not isinstance(values, list) or len(values) != size:
        raise Unprocessable("The cursor is not valid.")
    return values


def encode_time_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return encode_cursor([at.isoformat(), str(row_id)])


def decode_time_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The (timestamp, id) keyset most lists here page by."""
    values = decode_cursor(cursor, 2)
    if values is None:
        return None
    try:
        return datetime.fromisoformat(values[0]), uuid.UUID(values[1])
    except (TypeError, ValueError, AttributeError) as exc:
        raise Unprocessable("The cursor is not valid.") from exc


def page_of(
    rows: Sequence[R], limit: int, cursor_of: Callable[[R], str], shape: Callable[[R], Any]
) -> Page[Any]:
    """Rows fetched with `limit + 1`: one more than a page means there is a next page,
    which starts after the last row shown."""
    shown = rows[:limit]
    next_cursor = cursor_of(shown[-1]) if len(rows) > limit else None
    return Page(items=[shape(r) for r in shown], next_cursor=next_cursor)
