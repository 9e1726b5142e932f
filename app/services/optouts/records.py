"""Marketing opt-outs (§10, Art 21(2)-(3), PECR), keyed by HMAC of the normalised e-mail so
they outlive the subject's erasure and apply to any later subject with that e-mail."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.crypto import email_hash, email_hashes, newest_key
from app.core.driver import Conn, prepare
from app.models.optout import OptOutCheck, OptOutCreate, OptOutPublic
from app.services.audit import entries as audit
from app.services.changes import feed as changes

# The one INSERT of an opt-out (a new one below, and one carried to a new address).
INSERT_OPTOUT = (
    "INSERT INTO marketing_optouts"
    " (id, email_hash, email_hash_key, channel, source, reason, created_at)"
)
INSERT = text(
    INSERT_OPTOUT + " VALUES (gen_random_uuid(), :h, :kid, :channel, :source, :reason, now())"
    " ON CONFLICT (email_hash, channel) DO NOTHING"
    " RETURNING id, channel, source, reason, created_at"
)
EXISTING = text(
    "SELECT id, channel, source, reason, created_at FROM marketing_optouts"
    " WHERE email_hash = :h AND channel = :channel"
)


async def record_optout(
    session: AsyncSession, principal: Principal, *, data: OptOutCreate
) -> tuple[OptOutPublic, bool]:
    """Returns the opt-out and whether it is new (a repeat returns the first one)."""
    return await record_optout_hash(
        session,
        principal,
        email_hash=email_hash(data.email),
        channel=data.channel,
        source=data.source,
        reason=data.reason,
    )


async def record_optout_hash(
    session: AsyncSession,
    principal: Principal,
    *,
    email_hash: str,
    channel: str,
    source: str,
    reason: str | None,
    email_hash_key: int | None = None,
) -> tuple[OptOutPublic, bool]:
    """The same, from the keyed hash (a rights request may outlive the clear e-mail), made
    with key `email_hash_key` (default: the newest)."""
    kid = newest_key().id if email_hash_key is None else email_hash_key
    params = {"h": email_hash, "kid": kid, "channel": channel, "source": source, "reason": reason}
    row = (await session.execute(INSERT, params)).first()
    created = row is not None
    if row is None:
        row = (await session.execute(EXISTING, params)).one()
    else:
        subject_id = (
            await session.execute(
                text("SELECT id FROM subjects WHERE email_hash = :h AND erased_at IS NULL"),
                {"h": email_hash},
            )
        ).scalar_one_or_none()
        await changes.append(session, "optout", subject_id=subject_id, email_hash=email_hash)
        await audit.record(
            session,
            principal,
            "optout.create",
            "optout",
            row.id,
            channel=channel,
            source=source,
            subject_id=str(subject_id),
        )
    return OptOutPublic.model_validate(row._mapping), created


async def opted_out(session: AsyncSession, hashes: list[str], *, channel: str) -> set[str]:
    """Of these keyed hashes, those with an opt-out on `channel` already."""
    if not hashes:
        return set()
    rows = await session.execute(
        text(
            "SELECT email_hash FROM marketing_optouts"
            " WHERE channel = :c AND email_hash = ANY(CAST(:h AS text[]))"
        ),
        {"c": channel, "h": hashes},
    )
    return set(rows.scalars())


async def check(session: AsyncSession, *, email: str) -> OptOutCheck:
    channels = (
        (
            await session.execute(
                text(
                    "SELECT DISTINCT channel FROM marketing_optouts"
                    " WHERE email_hash = ANY(CAST(:h AS text[])) ORDER BY channel"
                ),
                {"h": email_hashes(email)},  # under every key: an erased person's too
            )
        )
        .scalars()
        .all()
    )
    return OptOutCheck(opted_out=bool(channels), channels=list(channels))  # type: ignore[arg-type]


CARRY = text(
    INSERT_OPTOUT + " SELECT gen_random_uuid(), :new, :kid, channel, source, reason, created_at"  # noqa: S608 - constant SQL
    " FROM marketing_optouts WHERE email_hash = ANY(CAST(:old AS text[])) ON CONFLICT DO NOTHING"
)
# A rotation of the hash key, for addresses known again: each opt-out moves to the new
# hash in place (its id, which the audit log names, stays); a duplicate left behind (the
# new hash had the same channel already) goes.
REKEY_SQL = """
WITH pairs AS (
  SELECT * FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS v(old, new)
), moved AS (
  UPDATE marketing_optouts o SET email_hash = p.new, email_hash_key = :kid
  FROM pairs p
  WHERE o.email_hash = p.old AND NOT EXISTS (
    SELECT 1 FROM marketing_optouts x WHERE x.email_hash = p.new AND x.channel = o.channel)
  RETURNING o.id
)
DELETE FROM marketing_optouts o USING pairs p
WHERE o.email_hash = p.old AND o.id NOT IN (SELECT id FROM moved)
"""
REKEY = text(REKEY_SQL)
REKEY_PREPARED = prepare(REKEY_SQL)  # the same, on the driver's connection (hot paths)


async def carry_to_new_address(session: AsyncSession, old_hash: str, new_hash: str | None) -> None:
    """A marketing objection belongs to the person, not to an address they stopped using:
    the opt-outs of the old address hold for the new one too."""
    if new_hash is not None:
        kid = newest_key().id
        await session.execute(CARRY, {"old": [old_hash], "new": new_hash, "kid": kid})


async def rekey(session: AsyncSession, pairs: list[tuple[str, str]], *, key_id: int) -> None:
    """Move the opt-outs of each (old hash, new hash) of one address to the new hash."""
    if pairs:
        old, new = [p[0] for p in pairs], [p[1] for p in pairs]
        await session.execute(REKEY, {"old": old, "new": new, "kid": key_id})


async def rekey_address_on(con: Conn, email: str) -> None:
    """`rekey_address` on the driver's connection."""
    hashes = email_hashes(email)
    if len(hashes) > 1:
        old, new = hashes[1:], [hashes[0]] * (len(hashes) - 1)
        await REKEY_PREPARED.execute(con, old=old, new=new, kid=newest_key().id)


async def rekey_address(session: AsyncSession, email: str) -> None:
    """An address seen again (a subject created or given it): opt-outs stored under an
    older hash key, such as an erased person's, move to the newest key, where the gate
    compares subjects' hashes with them. Nothing to do while there is one key."""
    hashes = email_hashes(email)
    if len(hashes) > 1:
        await rekey(session, [(old, hashes[0]) for old in hashes[1:]], key_id=newest_key().id)
