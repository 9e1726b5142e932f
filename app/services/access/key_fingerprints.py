"""The service refuses to start with an e-mail hash key that did not make the stored hashes.

Opt-outs, the change feed and e-mail look-ups all compare keyed hashes of addresses
(app.core.crypto). Started with another CONSENT_SECRET_KEY, the service would compute other
hashes and silently find no opt-out: a person who said no would be mailed again. So the
database keeps a fingerprint of the key (an HKDF derivation, one-way), written on the first
start, and every start compares it. A database from before fingerprints were kept is
checked against a stored address and its hash, then fingerprinted.
"""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.crypto import keyed_email_hash
from app.core.keys import KeyUse, derive

EMAIL_HASH_USE = "email-hash"
WRONG_KEY = (
    "CONSENT_SECRET_KEY is not the key the stored e-mail hashes were made with, so no opt-out"
    " would match: start with the previous CONSENT_SECRET_KEY (see SECURITY.md, keys)"
)


class WrongHashKey(Exception):
    """The configured key cannot verify what the database holds."""

    def __init__(self) -> None:
        super().__init__(WRONG_KEY)


def fingerprint(settings: Settings) -> str:
    return derive(settings, KeyUse.KEY_FINGERPRINTS).hex()


async def check_hash_key(session: AsyncSession, settings: Settings) -> None:
    """Raise WrongHashKey unless the configured key made the stored hashes; record its
    fingerprint on the first start. Run in the caller's transaction (it commits)."""
    mine = fingerprint(settings)
    stored = await _stored(session)
    if stored is None:
        await _check_a_stored_hash(session, settings)
        await session.execute(
            text(
                "INSERT INTO key_fingerprints (use, fingerprint) VALUES (:u, :f)"
                " ON CONFLICT (use) DO NOTHING"
            ),
            {"u": EMAIL_HASH_USE, "f": mine},
        )
        stored = await _stored(session)  # another worker may have written it first
    if stored != mine:
        raise WrongHashKey


async def _stored(session: AsyncSession) -> str | None:
    return (
        await session.execute(
            text("SELECT fingerprint FROM key_fingerprints WHERE use = :u"),
            {"u": EMAIL_HASH_USE},
        )
    ).scalar_one_or_none()


async def _check_a_stored_hash(session: AsyncSession, settings: Settings) -> None:
    row = (
        await session.execute(
            text(
                "SELECT email, email_hash FROM subjects"
                " WHERE email IS NOT NULL AND email_hash IS NOT NULL LIMIT 1"
            )
        )
    ).first()
    if row is not None and keyed_email_hash(settings, row.email) != row.email_hash:
        raise WrongHashKey
