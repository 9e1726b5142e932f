"""Re-hashing e-mail addresses under the newest hash key (`consent-api keys
rotate-email-hash`), after `CONSENT_EMAIL_HASH_KEYS` gained a new key in front.

Only an address still known can be re-hashed: each live subject's, with the opt-outs and
rights requests stored under its old hash. An erased person's opt-out is a hash only: it
stays under its old key, which stays configured (verify-only) so that it keeps matching
(`crypto.email_hashes`), and moves to the newest key if the address is ever seen again
(`optouts.rekey_address`). Batches commit one by one, each a consistent step: a run that
stops resumes where it stopped, since it picks whatever is not yet under the newest key."""

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.crypto import HashKey, hash_keys
from app.services.audit import entries as audit
from app.services.optouts import records as optouts
from app.services.subjects import records as subjects

BATCH = text("""
SELECT id, email, email_hash, email_hash_key FROM subjects
WHERE id > :after AND email_hash_key <> :kid AND email IS NOT NULL AND erased_at IS NULL
ORDER BY id LIMIT :n FOR UPDATE
""")
REQUESTS = text("""
UPDATE rights_requests r SET email_hash = v.new, email_hash_key = :kid
FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS v(old, new)
WHERE r.email_hash = v.old
""")
LEFT = text(
    "SELECT count(*) FROM subjects"
    " WHERE email_hash_key <> :kid AND email IS NOT NULL AND erased_at IS NULL"
)


class RotationError(Exception):
    """The keys configured cannot rotate (one line for the command line)."""


@dataclass(frozen=True)
class Step:
    rehashed: int
    last_id: uuid.UUID | None  # None: nothing was left after the cursor


def newest() -> HashKey:
    """The key to re-hash under; refused while there is nothing to rotate from."""
    keys = hash_keys(current_settings())
    if len(keys) < 2:
        raise RotationError(
            "one e-mail hash key only: put the new key first in CONSENT_EMAIL_HASH_KEYS and"
            " keep the current one after it (e.g. `1:NEW-SECRET,0:CURRENT-SECRET-KEY`)"
        )
    return keys[0]


async def remaining(session: AsyncSession) -> int:
    """Live subjects whose hash is not yet under the newest key."""
    return int((await session.execute(LEFT, {"kid": newest().id})).scalar_one())


async def rehash_batch(session: AsyncSession, *, after: uuid.UUID, size: int) -> Step:
    """Re-hash the next `size` subjects after `after` (in id order) and what is stored
    under their old hashes, in the caller's transaction."""
    key = newest()
    rows = (await session.execute(BATCH, {"after": after, "kid": key.id, "n": size})).all()
    if not rows:
        return Step(0, None)
    new = [key.hash(r.email) for r in rows]
    pairs = [(r.email_hash, n) for r, n in zip(rows, new, strict=True) if r.email_hash]
    await subjects.rehash(session, [r.id for r in rows], new, key_id=key.id)
    await optouts.rekey(session, pairs, key_id=key.id)
    old, new_hashes = [p[0] for p in pairs], [p[1] for p in pairs]
    await session.execute(REQUESTS, {"old": old, "new": new_hashes, "kid": key.id})
    return Step(len(rows), rows[-1].id)


async def record_run(session: AsyncSession, principal: Principal, *, rehashed: int) -> None:
    await audit.record(
        session,
        principal,
        "email_hash.rotate",
        "email_hash_key",
        str(newest().id),
        rehashed=rehashed,
    )
