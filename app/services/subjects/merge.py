"""The same person held twice (Art 5(1)(d) accuracy): merging one subject into another.

Nothing stored is rewritten (events, receipts and decisions are the ledger and the audit
chain's content): the merged subject is marked `merged_into` and every read of the survivor
follows the link (`records.LINKED_IDS`). What the gate reads is current state, so the
survivor takes it over through each fact's own write path: per purpose the newest consent
event across both decides (the consent write's newest-wins rule), the merged subject's
opt-outs hold for the survivor's address, its objections are recorded on the survivor, and
a basis only it had is set on the survivor with the merge as the history's actor.
"""

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.errors import Conflict
from app.models.basis import LawfulBasisSet
from app.models.rights import OPEN_STATUSES
from app.models.subject import Subject, SubjectMergePublic, to_public
from app.services.audit import entries as audit
from app.services.bases import records as bases
from app.services.changes import feed as changes
from app.services.consent.statements import CARRY_STATE
from app.services.optouts import objections
from app.services.optouts import records as optouts
from app.services.subjects import records as subjects

# The history's actor of a basis set by a merge: `merge:<merged subject's id>`.
MERGE_ACTOR = "merge:"

# An erasure asked for and not yet done, by either subject (or one merged into it) or by
# either address: combining the data now could outlive what the erasure removes.
OPEN_ERASURE = text(f"""
SELECT EXISTS (
  SELECT 1 FROM rights_requests r
  WHERE r.type = 'erasure' AND r.status = ANY (CAST(:open AS text[]))
    AND (r.subject_id IN ({subjects.LINKED_IDS.replace(":s", ":a")})
         OR r.subject_id IN ({subjects.LINKED_IDS.replace(":s", ":b")})
         OR r.email_hash = ANY (CAST(:hashes AS text[])))
)""")  # noqa: S608 - constant SQL
# Bases only the merged subject has, on purposes that still allow them.
ONLY_THEIRS = text(f"""
SELECT b.purpose, {", ".join("b." + f for f in bases.VALUE_FIELDS)}
FROM lawful_bases b JOIN purposes p ON p.key = b.purpose AND b.basis = ANY (p.allowed_bases)
WHERE b.subject_id = :from_id AND NOT EXISTS (
  SELECT 1 FROM lawful_bases x WHERE x.subject_id = :into AND x.purpose = b.purpose)
ORDER BY b.purpose""")  # noqa: S608 - constant SQL
THEIR_OBJECTIONS = text(
    "SELECT purpose, source FROM objections WHERE subject_id = :from_id ORDER BY purpose"
)
NEW_OPTOUTS = text("""
SELECT count(*) FROM marketing_optouts o WHERE o.email_hash = :old AND NOT EXISTS (
  SELECT 1 FROM marketing_optouts x WHERE x.email_hash = :new AND x.channel = o.channel)""")


def _refused(reason: str, detail: str, **extra: Any) -> Conflict:
    return Conflict(detail, reason=reason, **extra)


def _check_pair(survivor: Subject, other: Subject) -> None:
    """409 where a merge cannot be right, each with a reason a client can act on."""
    for role, s in (("subject", survivor), ("from", other)):
        if s.erased_at is not None:
            raise _refused("subject_erased", f"The `{role}` subject has been erased.")
        if s.merged_into is not None:
            raise _refused(
                "subject_merged",
                f"The `{role}` subject was merged already; use the one it was merged into.",
                merged_into=str(s.merged_into),
            )
        if s.restricted:  # Art 18(2): combining data is processing
            raise _refused("restricted", f"The `{role}` subject's processing is restricted.")


async def _check_no_open_erasure(session: AsyncSession, survivor: Subject, other: Subject) -> None:
    hashes = [h for h in (survivor.email_hash, other.email_hash) if h]
    params = {"a": survivor.id, "b": other.id, "hashes": hashes, "open": list(OPEN_STATUSES)}
    if (await session.execute(OPEN_ERASURE, params)).scalar_one():
        raise _refused("erasure_requested", "An erasure request is open for one of the subjects.")


async def _take_consents(session: AsyncSession, survivor: Subject, other: Subject) -> list[str]:
    """The newest event across both decides, purpose by purpose; each taken state is fed."""
    rows = (await session.execute(CARRY_STATE, {"into": survivor.id, "from_id": other.id})).all()
    for row in rows:  # sync re-judges the survivor for each purpose that changed
        await changes.append(
            session,
            f"consent.{row.status}",
            subject_id=survivor.id,
            email_hash=survivor.email_hash,
            purpose=row.purpose,
        )
    return sorted(f"{r.purpose}:{r.recipient}" if r.recipient else r.purpose for r in rows)


async def _take_bases(
    session: AsyncSession, principal: Principal, survivor: Subject, other: Subject
) -> list[str]:
    """A basis only the merged subject had, set on the survivor through the basis write path
    (its history names the merge). Held values are not judged again, only carried."""
    rows = (await session.execute(ONLY_THEIRS, {"into": survivor.id, "from_id": other.id})).all()
    for row in rows:
        values = {f: getattr(row, f) for f in bases.VALUE_FIELDS}
        await bases.set_basis(
            session,
            principal,
            subject_id=survivor.id,
            purpose=row.purpose,
            data=LawfulBasisSet.model_construct(**values),
            actor=f"{MERGE_ACTOR}{other.id}",
        )
    return [row.purpose for row in rows]


async def _take_objections(session: AsyncSession, survivor: Subject, other: Subject) -> list[str]:
    """The merged subject's objections (Art 21), recorded on the survivor with their source."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for row in await session.execute(THEIR_OBJECTIONS, {"from_id": other.id}):
        by_source[row.source].append(row.purpose)
    added: list[str] = []
    for source, purposes in sorted(by_source.items()):
        added += await objections.record(session, survivor, purposes, source=source)
    return sorted(added)


async def _carry_optouts(session: AsyncSession, survivor: Subject, other: Subject) -> int:
    """Opt-outs belong to the person: the merged address's hold for the survivor's too."""
    if not other.email_hash or not survivor.email_hash:
        return 0
    params = {"old": other.email_hash, "new": survivor.email_hash}
    count = int((await session.execute(NEW_OPTOUTS, params)).scalar_one())
    await optouts.carry_to_new_address(session, other.email_hash, survivor.email_hash)
    return count


async def merge(
    session: AsyncSession, principal: Principal, *, into: uuid.UUID, from_id: uuid.UUID
) -> SubjectMergePublic:
    """Merge subject `from_id` into `into`, in the caller's transaction. Both rows are
    locked (lower id first) before anything is read, so every writer of either waits."""
    if into == from_id:
        raise _refused("same_subject", "A subject cannot be merged into itself.")
    survivor, other = await subjects.lock_pair(session, into, from_id)
    _check_pair(survivor, other)
    await _check_no_open_erasure(session, survivor, other)
    taken = await _take_consents(session, survivor, other)
    bases_set = await _take_bases(session, principal, survivor, other)
    added = await _take_objections(session, survivor, other)
    carried = await _carry_optouts(session, survivor, other)
    await subjects.mark_merged(session, other, survivor)
    assert other.merged_at is not None  # set by mark_merged
    result = SubjectMergePublic(
        subject=to_public(survivor),
        merged=other.id,
        merged_at=other.merged_at,
        consents_taken=taken,
        bases_set=bases_set,
        objections_added=added,
        opt_outs_carried=carried,
    )
    await _record(session, principal, result, survivor, other)
    return result


async def _record(
    session: AsyncSession,
    principal: Principal,
    result: SubjectMergePublic,
    survivor: Subject,
    other: Subject,
) -> None:
    """Audited on both subjects; in the feed, the merged one leaves every copy and the
    survivor's answer is sent again."""
    digest = result.model_dump(mode="json", exclude={"subject", "merged_at"})
    await audit.record(session, principal, "subject.merge", "subject", survivor.id, **digest)
    await audit.record(
        session, principal, "subject.merged", "subject", other.id, merged_into=str(survivor.id)
    )
    await changes.append(
        session, "subject.merged", subject_id=other.id, email_hash=other.email_hash
    )
    await changes.append(
        session, "subject.updated", subject_id=survivor.id, email_hash=survivor.email_hash
    )
