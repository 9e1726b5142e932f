"""The e-mail outbox: every message the service sends is a row written in the transaction
that decided to send it, and sent afterwards by the sender (app.services.mail.sender). An
answer never waits for SMTP, a refused or failed send is retried with back-off, and a
restart loses nothing (the row stays `pending` until the server took the message).

No address and no link are stored: the sender reads the subject's address and signs the
link when it sends, so the outbox holds no personal data and no credential."""

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

KINDS = ("double_opt_in", "rights_request")
FIRST_RETRY = timedelta(seconds=5)
LAST_RETRY = timedelta(minutes=15)  # a person is waiting for the message: retry often
BATCH = 50

# The fragment the double opt-in's statement composes (its row and the mail in one go).
INSERT_EMAIL = (
    "INSERT INTO email_outbox (id, kind, ref, subject_id, state, attempts, next_try_at, created_at)"
)
ENQUEUE = text(
    INSERT_EMAIL + " VALUES (:id, :kind, :ref, :subject_id, 'pending', 0, :now, :now)"
    " ON CONFLICT (kind, ref) DO NOTHING"
)
SENDER_LOCK = 7_310_560  # one sender per database
# What each due message needs: the subject's current address, and what it is about.
DUE = text("""
SELECT o.id, o.kind, o.ref, o.created_at, s.id AS subject_id, s.email, s.email_hash,
  s.email_hash_key, s.erased_at, d.state AS doi_state, d.expires_at AS doi_expires_at,
  d.email_hash AS doi_email_hash, d.purpose, p.description AS purpose_description,
  r.type AS request_type, r.status AS request_status
FROM email_outbox o
LEFT JOIN subjects s ON s.id = o.subject_id
LEFT JOIN double_opt_ins d ON o.kind = 'double_opt_in' AND d.id = o.ref
LEFT JOIN purposes p ON p.key = d.purpose
LEFT JOIN rights_requests r ON o.kind = 'rights_request' AND r.id = o.ref
WHERE o.state = 'pending' AND o.next_try_at <= :now
ORDER BY o.next_try_at LIMIT :limit
FOR UPDATE OF o SKIP LOCKED
""")
SENT = text(
    "UPDATE email_outbox SET state = 'sent', sent_at = :now, last_error = NULL"
    " WHERE id = ANY(CAST(:ids AS uuid[]))"
)
FAILED = text("""
UPDATE email_outbox SET attempts = attempts + 1, last_error = :error,
  next_try_at = CAST(:now AS timestamptz)
    + least(CAST(:first AS interval) * power(2, attempts), CAST(:last AS interval))
WHERE id = ANY(CAST(:ids AS uuid[]))
""")
CANCEL = text(
    "UPDATE email_outbox SET state = 'cancelled' WHERE state = 'pending'"
    " AND (id = ANY(CAST(:ids AS uuid[])) OR ref = ANY(CAST(:refs AS uuid[])))"
)


def backoff(attempts: int) -> timedelta:
    """The pause after failure number `attempts`: 5 s doubling, at most 15 minutes."""
    return min(FIRST_RETRY * (2 ** max(0, attempts - 1)), LAST_RETRY)


async def enqueue(
    session: AsyncSession, *, kind: str, ref: uuid.UUID, subject_id: uuid.UUID, now: datetime
) -> None:
    """Queue one message about `ref` (once: a second for the same thing is ignored)."""
    assert kind in KINDS
    await session.execute(
        ENQUEUE,
        {"id": uuid.uuid4(), "kind": kind, "ref": ref, "subject_id": subject_id, "now": now},
    )


async def due(session: AsyncSession, now: datetime, limit: int = BATCH) -> list[Any]:
    """Pending messages whose time has come, locked for this sender's transaction; none
    while another sender holds the database's sender lock."""
    locked = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SENDER_LOCK})
    if not locked.scalar_one():
        return []
    return list((await session.execute(DUE, {"now": now, "limit": limit})).all())


async def sent(session: AsyncSession, ids: Sequence[uuid.UUID], now: datetime) -> None:
    if ids:
        await session.execute(SENT, {"ids": list(ids), "now": now})


async def failed(
    session: AsyncSession, ids: Sequence[uuid.UUID], now: datetime, error: str
) -> None:
    """Tried again later (5 s, doubling up to 15 minutes); the error class only, no address."""
    if ids:
        await session.execute(
            FAILED,
            {
                "ids": list(ids),
                "now": now,
                "error": error[:200],
                "first": FIRST_RETRY,
                "last": LAST_RETRY,
            },
        )


async def cancel(
    session: AsyncSession, *, ids: Sequence[uuid.UUID] = (), refs: Sequence[uuid.UUID] = ()
) -> None:
    """Never send these (the link expired, the subject was erased, nothing left to confirm)."""
    if ids or refs:
        await session.execute(CANCEL, {"ids": list(ids), "refs": list(refs)})
