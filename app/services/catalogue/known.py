"""What a problem about an unknown catalogue key says (API.md: "one that names an unknown
catalogue key lists the valid keys"): the key refused and the keys there are, so that a
client corrects itself without a second call.

Only keys are listed: they are the controller's configuration, never personal data; no
description, name or other column goes out. The keys are read on the error path only (one
short statement), on whatever connection the caller holds: a hot path's driver connection
or a cold path's session, inside its transaction.
"""

import re
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.driver import Conn, connection_of, prepare
from app.core.errors import NotFound, ProblemError, Unprocessable

Kind = Literal["purpose", "recipient", "policy_version", "category", "source"]
MAX_LISTED = 200  # a catalogue is tens of keys; past this the list is cut, and says so
# kind -> (the statement reading its keys, how the list is named)
_KEYS = {
    "purpose": ("SELECT key FROM purposes ORDER BY key", "purposes"),
    "recipient": ("SELECT key FROM recipients ORDER BY key", "recipients"),
    "policy_version": ("SELECT version FROM policies ORDER BY version", "policy versions"),
    "category": ("SELECT key FROM categories ORDER BY key", "categories"),
    "source": ("SELECT key FROM sources ORDER BY key", "sources"),
}
_STATEMENTS = {k: prepare(f"{sql} LIMIT {MAX_LISTED + 1}") for k, (sql, _) in _KEYS.items()}
_SINGULAR = {"policy_version": "policy version"}
KEY_LIKE = re.compile(r"[A-Za-z0-9_.\-]{1,63}")


async def known_keys(con: Conn | AsyncSession, kind: Kind) -> list[str]:
    """The catalogue's keys in order (at most MAX_LISTED + 1: one more says "cut")."""
    rows = await _STATEMENTS[kind].fetch(await connection_of(con))
    return [row[0] for row in rows]


def _listing(kind: Kind, keys: list[str]) -> str:
    plural = _KEYS[kind][1]
    if not keys:
        return f"there are no {plural} yet"
    shown = ", ".join(keys[:MAX_LISTED])
    more = f" (the first {MAX_LISTED})" if len(keys) > MAX_LISTED else ""
    return f"known {plural}{more}: {shown}"


def _quoted(values: list[str]) -> str:
    # A key refused is echoed only when it looks like a key: what a client put in the
    # field may be anything, an e-mail address or a name included (no personal data in
    # errors).
    return ", ".join(f"`{v}`" if KEY_LIKE.fullmatch(v) else "`?`" for v in values)


async def unknown_key(
    con: Conn | AsyncSession,
    kind: Kind,
    values: str | list[str],
    *,
    field: str | None = None,
    not_found: bool = False,
) -> ProblemError:
    """The problem to raise: 422 (a key named in a body or a query), or 404 with
    `not_found` (a key in the path). It names the keys refused and lists the known ones,
    also as the `known` member."""
    refused = [values] if isinstance(values, str) else list(values)
    keys = await known_keys(con, kind)
    noun = _SINGULAR.get(kind, kind) if len(refused) == 1 else _KEYS[kind][1]
    detail = f"Unknown {noun} {_quoted(refused)}; {_listing(kind, keys)}."
    problem = NotFound if not_found else Unprocessable
    if field is None:
        return problem(detail, known=keys[:MAX_LISTED])
    return problem(detail, known=keys[:MAX_LISTED], field=field)
