"""Completing a rights request performs it (§10). Each returns (result, private): `result`
holds `outcome` (no personal data, shown on the request) and, for access and portability,
the personal data to export; `private` goes to the request's history, never the API."""

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.errors import Unprocessable
from app.core.keys import KeyUse, keyed_hash
from app.models.rights import Complete, RightsRequest
from app.models.subject import Subject, SubjectUpdate
from app.services.catalogue import entries as catalogue
from app.services.changes import feed as changes
from app.services.consent import withdrawals
from app.services.optouts import objections
from app.services.optouts import records as optouts
from app.services.rights import erasure, subject_report
from app.services.subjects import records as subjects

Result = tuple[dict[str, Any], dict[str, Any] | None]
# Every fulfilment that changes data appends to the change feed, so that sync clients tell
# the recipients too (Art 19).


async def _subject(
    session: AsyncSession, req: RightsRequest, *, lock: bool = False
) -> Subject | None:
    """The live subject, if any; locked where we change it (no write may interleave)."""
    if req.subject_id is None:
        return None
    if lock:
        subject: Subject | None = await subjects.lock_subject(session, req.subject_id)
    else:
        subject = await session.get(Subject, req.subject_id)
    return subject if subject is not None and subject.erased_at is None else None


async def _access(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    report = await subject_report.access_report(session, req, await _subject(session, req))
    return {"outcome": {"report": "access", "held": report["held"]}, "report": report}, None


async def _portability(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    export = await subject_report.portable_data(session, await _subject(session, req))
    outcome = {
        "report": "portability",
        "included_purposes": export["included_purposes"],
        "refused": export["refused"],
    }
    return {"outcome": outcome, "report": export}, None


def _keyed(value: Any) -> str | None:
    """A fingerprint of a rectified value, under a key of its own: the value is the caller's
    choice, so no other key may be derivable from what this stores (app.core.keys)."""
    if value is None:
        return None
    return keyed_hash(current_settings(), KeyUse.VALUE_FINGERPRINTS, str(value))


async def _rectification(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    subject = await _subject(session, req, lock=True)
    if subject is None:
        raise Unprocessable("There is no live subject to rectify.")
    changes_ = data.changes.model_dump(exclude_unset=True) if data.changes else {}
    if not changes_:
        raise Unprocessable("Rectification needs `changes`.", field="changes")
    old = {field: getattr(subject, field) for field in changes_}
    old_email_hash = subject.email_hash
    await subjects.update_subject(
        session, principal, subject_id=subject.id, data=SubjectUpdate.model_validate(changes_)
    )
    await changes.append(
        session, "subject.rectified", subject_id=subject.id, email_hash=subject.email_hash
    )
    # Superseded values must not stay readable: stored reports and replies that echoed them
    # go, and the request itself keeps the address it came from only as its keyed hash.
    await erasure.forget_superseded_values(session, subject, old=old, old_email_hash=old_email_hash)
    # Old and new values only as keyed hashes: provable if presented, never readable.
    private = {
        "fields": {
            f: {"old_hmac": _keyed(old[f]), "new_hmac": _keyed(changes_[f])} for f in changes_
        }
    }
    return {"outcome": {"rectified_fields": sorted(changes_)}}, private


async def _erasure(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    subject = await _subject(session, req, lock=True)
    if subject is None:
        await erasure.forget_requests(session, req.email_hash, None)
        return {"outcome": {"held": False, "erased": False}}, None
    outcome = await erasure.erase_subject(session, principal, subject)
    kind = "subject.erased" if outcome["erased"] else "subject.erased_in_part"
    await changes.append(session, kind, subject_id=subject.id, email_hash=req.email_hash)
    return {"outcome": outcome}, None


async def _restriction(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    subject = await _subject(session, req, lock=True)
    if subject is None:
        raise Unprocessable("There is no live subject to restrict.")
    subject.restricted = True
    await session.flush()
    await changes.append(
        session, "subject.restricted", subject_id=subject.id, email_hash=subject.email_hash
    )
    return {"outcome": {"restricted": True}}, None


async def _withdraw_consent(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    subject = await _subject(session, req)
    if subject is None:
        return {"outcome": {"held": False, "withdrawn": []}}, None
    withdrawn = await withdrawals.withdraw_all(
        session, principal, subject=subject, purposes=data.purposes
    )
    return {"outcome": {"withdrawn": withdrawn}}, None


async def _opt_out_everywhere(
    session: AsyncSession,
    principal: Principal,
    req: RightsRequest,
    email_hash: str,
    email_hash_key: int,
) -> None:
    await optouts.record_optout_hash(
        session,
        principal,
        email_hash=email_hash,
        email_hash_key=email_hash_key,
        channel="all",
        source="rights_request",
        reason=f"rights request {req.id}",
    )


async def _object_marketing(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    # Art 21(3) is absolute and reaches every direct-marketing purpose, named or not.
    if req.email_hash is None:
        raise Unprocessable("The request names no e-mail to opt out.")
    # The subject's hash when it is live (its key may have rotated since the request).
    subject = await session.get(Subject, req.subject_id) if req.subject_id else None
    if subject is not None and subject.email_hash is not None:
        await _opt_out_everywhere(
            session, principal, req, subject.email_hash, subject.email_hash_key
        )
    else:
        await _opt_out_everywhere(session, principal, req, req.email_hash, req.email_hash_key)
    return {"outcome": {"opted_out": True, "channel": "all"}}, None


async def _direct_marketing_purposes(session: AsyncSession) -> set[str]:
    return set(
        (await session.execute(text("SELECT key FROM purposes WHERE direct_marketing"))).scalars()
    )


async def _objected_purposes(
    session: AsyncSession, subject: Subject, named: list[str]
) -> list[str]:
    """The named purposes (first mention first), or with none named every purpose resting on
    legitimate interests (Art 21(1))."""
    if named:
        return list(dict.fromkeys(named))
    return list(
        (
            await session.execute(
                text(
                    "SELECT purpose FROM lawful_bases WHERE subject_id = :s"
                    " AND basis = 'legitimate_interests' ORDER BY purpose"
                ),
                {"s": subject.id},
            )
        ).scalars()
    )


async def _on_legitimate_interests(session: AsyncSession, subject: Subject) -> set[str]:
    return set(
        (
            await session.execute(
                text(
                    "SELECT purpose FROM lawful_bases WHERE subject_id = :s"
                    " AND basis = 'legitimate_interests'"
                ),
                {"s": subject.id},
            )
        ).scalars()
    )


async def _object_processing(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    subject = await _subject(session, req)
    if subject is None:
        return {"outcome": {"held": False, "objected": []}}, None
    marketing = await _direct_marketing_purposes(session)
    named = data.purposes or []
    await catalogue.require_purposes(session, named)
    opted_out = sorted(set(named) & marketing)
    if opted_out and subject.email_hash:
        # Objecting to a direct-marketing purpose is Art 21(2)-(3): absolute, whatever the
        # basis, so it is recorded as an opt-out the gate applies to every basis.
        await _opt_out_everywhere(
            session, principal, req, subject.email_hash, subject.email_hash_key
        )
    # Every named purpose gets its objection (the gate answers `objected` for it), direct
    # marketing included: the opt-out above comes in addition, never instead.
    purposes = await _objected_purposes(session, subject, named)
    await objections.record(session, subject, purposes, source="rights_request")
    # Art 21(1) reaches processing on legitimate interests; an objection to a purpose on
    # another basis is recorded but only bites if that basis changes to legitimate interests.
    li = await _on_legitimate_interests(session, subject)
    outcome = {
        "objected": sorted(purposes),
        "opted_out_of_marketing": opted_out,
        "not_on_legitimate_interests": sorted(set(purposes) - li),
    }
    return {"outcome": outcome}, None


HANDLERS = {
    "access": _access,
    "portability": _portability,
    "rectification": _rectification,
    "erasure": _erasure,
    "restriction": _restriction,
    "withdraw_consent": _withdraw_consent,
    "object_marketing": _object_marketing,
    "object_processing": _object_processing,
}


async def perform(
    session: AsyncSession, principal: Principal, req: RightsRequest, data: Complete
) -> Result:
    return await HANDLERS[req.type](session, principal, req, data)
