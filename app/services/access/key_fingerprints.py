"""The service refuses to start with an e-mail hash key that did not make the stored hashes.

Opt-outs, the change feed and e-mail look-ups all compare keyed hashes of addresses
(app.core.crypto). Started with another CONSENT_SECRET_KEY, the service would compute other
hashes and silently find no opt-out: a person who said no would be mailed again. So the
database keeps a fingerprint of each hash key (an HKDF derivation, one-way) under its id,
written the first time the key is seen, and every start compares them; a key that stored
hashes still use must stay configured (verify-only). A database from before fingerprints
were kept is checked against a stored address and its hash, then fingerprinted.
"""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.crypto import DERIVED_KEY_ID, HashKey, hash_keys
from app.core.keys import KeyUse, _derive

EMAIL_HASH_USE = "email-hash"
WRONG_KEY = (
    "CONSENT_SECRET_KEY is not the key the stored e-mail hashes were made with, so no opt-out"
    " would match: start with the previous CONSENT_SECRET_KEY (see SECURITY.md, keys)"
)


class WrongHashKey(Exception):
    """The configured keys cannot verify what the database holds."""

    def __init__(self, message: str = WRONG_KEY) -> None:
        super().__init__(message)


def _use(key: HashKey) -> str:
    # Key 0 keeps the label it had before keys could rotate: its stored fingerprint stays.
    return EMAIL_HASH_USE if key.id == DERIVED_KEY_ID else f"{EMAIL_HASH_USE}:{key.id}"


def key_fingerprint(key: HashKey) -> str:
    """One-way: an HKDF derivation of the key's own secret (for key 0, the root secret it
    was, exactly as before rotation existed)."""
    return _derive(key.secret.decode(), KeyUse.KEY_FINGERPRINTS).hex()


def fingerprint(settings: Settings) -> str:
    return key_fingerprint(hash_keys(settings)[0])


async def check_hash_key(session: AsyncSession, settings: Settings) -> None:
    """Raise WrongHashKey unless each configured key is the one that made the hashes stored
    under its id, and every id that stored hashes still use is configured; record each
    key's fingerprint the first time it is seen. Run in the caller's transaction."""
    keys = hash_keys(settings)
    stored = await _stored(session)
    if not stored:
        await _check_a_stored_hash(session, keys)
    for key in keys:
        mine = key_fingerprint(key)
        if _use(key) not in stored:
            await session.execute(
                text(
                    "INSERT INTO key_fingerprints (use, fingerprint) VALUES (:u, :f)"
                    " ON CONFLICT (use) DO NOTHING"
                ),
                {"u": _use(key), "f": mine},
            )
            stored = await _stored(session)  # another worker may have written it first
        if stored[_use(key)] != mine:
            raise WrongHashKey(_wrong(key))
    configured = {_use(k) for k in keys}
    for use in sorted(set(stored) - configured):
        kid = int(use.partition(":")[2] or DERIVED_KEY_ID)
        if await _in_use(session, kid):
            raise WrongHashKey(
                f"stored e-mail hashes still use key {kid}: keep it in CONSENT_EMAIL_HASH_KEYS"
                " (verify-only, after the newest) so that their opt-outs keep matching"
            )


def _wrong(key: HashKey) -> str:
    if key.id == DERIVED_KEY_ID:
        return WRONG_KEY
    return (
        f"CONSENT_EMAIL_HASH_KEYS: key {key.id} is not the key that made the hashes stored"
        " under its id, so no opt-out would match: give it its previous secret"
    )


async def _stored(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(
        text("SELECT use, fingerprint FROM key_fingerprints WHERE use LIKE :u"),
        {"u": EMAIL_HASH_USE + "%"},
    )
    return {r.use: r.fingerprint for r in rows}


async def _in_use(session: AsyncSession, key_id: int) -> bool:
    for table in ("subjects", "marketing_optouts", "rights_requests"):
        used = await session.execute(
            text(
                f"SELECT 1 FROM {table} WHERE email_hash_key = :k"  # noqa: S608 - fixed names
                " AND email_hash IS NOT NULL LIMIT 1"
            ),
            {"k": key_id},
        )
        if used.first() is not None:
            return True
    return False


async def _check_a_stored_hash(session: AsyncSession, keys: list[HashKey]) -> None:
    """A database from before fingerprints: one stored address and its hash must agree
    with the key of its id."""
    row = (
        await session.execute(
            text(
                "SELECT email, email_hash, email_hash_key FROM subjects"
                " WHERE email IS NOT NULL AND email_hash IS NOT NULL LIMIT 1"
            )
        )
    ).first()
    if row is None:
        return
    key = next((k for k in keys if k.id == row.email_hash_key), None)
    if key is None or key.hash(row.email) != row.email_hash:
        raise WrongHashKey
