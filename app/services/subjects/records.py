"""Subjects: create, read, list, update. Data minimisation is enforced by the models."""

import uuid
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import Principal
from app.core.crypto import email_hash, newest_key
from app.core.driver import Conn, Database, UnitOfWork, prepare
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import Page, decode_time_cursor, encode_time_cursor, page_of
from app.models.base import utcnow
from app.models.catalogue import Category, Source
from app.models.subject import Subject, SubjectCreate, SubjectPublic, SubjectUpdate, to_public
from app.services.audit import entries as audit
from app.services.catalogue.known import unknown_key
from app.services.changes import clock
from app.services.changes import feed as changes
from app.services.optouts import records as optouts


async def _check_catalogue(session: AsyncSession, category: str | None, source: str | None) -> None:
    """One round trip: both keys must exist in their catalogues."""
    row = (
        await session.execute(
            select(
                select(col(Category.key)).where(col(Category.key) == category).scalar_subquery(),
                select(col(Source.key)).where(col(Source.key) == source).scalar_subquery(),
            )
        )
    ).one()
    if category is not None and row[0] is None:
        raise await unknown_key(session, "category", category, field="category")
    if source is not None and row[1] is None:
        raise await unknown_key(session, "source", source, field="source")


# The one INSERT of a subject: `create_subject` (through the same table model),
# `create_web_prospect` below and the import's set-based batch select into it.
INSERT_SUBJECT = """INSERT INTO subjects (id, email, email_hash, email_hash_key, name, phone,
    mobile, job_title, company, business_address, category, source, source_detail, restricted,
    created_at, updated_at)"""
# A web form's prospect, created, audited and fed to sync in one statement (as
# `create_subject` does: the same audit entry, the same change-feed entry); nothing when a
# live subject has the e-mail.
NEW_WEB_PROSPECT = prepare(f"""
WITH s AS (
  {INSERT_SUBJECT}
  VALUES (:id, :email, :email_hash, :email_hash_key, NULL, NULL, NULL, NULL, NULL, NULL,
          'prospect', 'enquiry', 'web form consent', false, now(), now())
  ON CONFLICT (email) WHERE erased_at IS NULL DO NOTHING
  RETURNING id, email_hash
),
audited AS (
  {audit.INSERT_AUDIT_ENTRY}
  SELECT :key_id, :key_name, :key_role, 'subject.create', 'subject', id::text,
         '{{"fields": ["category", "email", "source", "source_detail"]}}'::jsonb
  FROM s
),
fed AS (
  {changes.INSERT_CHANGE}
  SELECT 'subject.created', id, email_hash, NULL, now() FROM s
)
SELECT id, email_hash FROM s
""")  # noqa: S608 - constant SQL
LIVE_BY_EMAIL = prepare("SELECT id FROM subjects WHERE email = :email AND erased_at IS NULL")


async def create_web_prospect(
    con: Conn, principal: Principal, email: str
) -> tuple[uuid.UUID, str | None]:
    """The prospect a web form's consent from an unknown address creates, in one statement.
    Two such forms at once: the second gets the subject the first created."""
    key = newest_key()
    hashed = key.hash(email)
    created = await NEW_WEB_PROSPECT.fetchrow(
        con,
        id=uuid.uuid4(),
        email=email,
        email_hash=hashed,
        email_hash_key=key.id,
        key_id=principal.key_id,
        key_name=principal.name,
        key_role=principal.role,
    )
    if created is not None:
        await optouts.rekey_address_on(con, email)  # an erased person's opt-out holds
        return created.id, created.email_hash
    existing = await LIVE_BY_EMAIL.fetchrow(con, email=email)
    if existing is None:  # the e-mail's subject was erased between the two statements
        raise Conflict("A concurrent request changed the same data; retry.")
    return existing.id, hashed


async def _live_id_for_email(session: AsyncSession, email: str) -> uuid.UUID | None:
    stmt = select(col(Subject.id)).where(
        col(Subject.email) == email, col(Subject.erased_at).is_(None)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


# A subject's own fields, as SubjectCreate takes them: what an import row may update.
IMPORTED_FIELDS = (
    "email", "name", "phone", "mobile", "job_title", "company", "business_address",
    "category", "source", "source_detail",
)  # fmt: skip


async def live_by_emails(session: AsyncSession, emails: list[str]) -> dict[str, dict[str, Any]]:
    """The live subjects holding any of `emails` (already normalised), by e-mail: their id
    and fields. One indexed lookup, the e-mails as one array (a batch may hold more than
    a statement's limit of parameters)."""
    if not emails:
        return {}
    columns = [col(Subject.id), *(getattr(Subject, f) for f in IMPORTED_FIELDS)]
    stmt = select(*columns).where(
        col(Subject.email) == any_(bindparam("emails", emails, type_=ARRAY(String))),
        col(Subject.erased_at).is_(None),
    )
    return {row.email: dict(row._mapping) for row in await session.execute(stmt)}


def _email_taken(existing: uuid.UUID | None) -> Conflict:
    return Conflict("A live subject already has this e-mail.", existing_id=str(existing))


async def create_subject(
    session: AsyncSession, principal: Principal, *, data: SubjectCreate
) -> Subject:
    await _check_catalogue(session, data.category, data.source)
    values = data.model_dump()
    now = utcnow()
    values["email_hash"] = email_hash(data.email)
    values["email_hash_key"] = newest_key().id
    stmt = (
        insert(Subject)
        .values(id=uuid.uuid4(), created_at=now, updated_at=now, restricted=False, **values)
        .on_conflict_do_nothing(
            index_elements=["email"],
            index_where=col(Subject.erased_at).is_(None),
        )
        .returning(Subject)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        raise _email_taken(await _live_id_for_email(session, data.email))
    subject: Subject = row[0]
    await optouts.rekey_address(session, data.email)  # an erased person's opt-out holds
    await audit.record(
        session,
        principal,
        "subject.create",
        "subject",
        subject.id,
        fields=sorted(k for k, v in values.items() if v is not None and k != "email_hash_key"),
    )
    await changes.append(
        session, "subject.created", subject_id=subject.id, email_hash=subject.email_hash
    )
    await clock.schedule(session, [subject.id])  # its retention due date
    return subject


# SubjectPublic's fields, in its order, for the hot GET (app.core.driver).
PUBLIC_BY_ID = prepare("""
SELECT id, email, name, phone, mobile, job_title, company, business_address, category, source,
       source_detail,
       CASE WHEN erased_at IS NOT NULL THEN 'erased' WHEN restricted THEN 'restricted'
            ELSE 'active' END AS status,
       interest_ceased_at, erased_at, created_at, updated_at, merged_into
FROM subjects WHERE id = :id
""")


async def read_subject(db: Database, subject_id: uuid.UUID) -> dict[str, Any]:
    """One subject as SubjectPublic serialises it: one indexed SELECT, on its own."""
    async with db.unit(UnitOfWork.STATEMENT) as con:
        return await public_subject(con, subject_id)


async def public_subject(con: Conn, subject_id: uuid.UUID) -> dict[str, Any]:
    """One subject as SubjectPublic serialises it, in one indexed SELECT."""
    row = await PUBLIC_BY_ID.fetchrow(con, id=subject_id)
    if row is None:
        raise NotFound("No subject with this id.")
    return dict(row)


async def get_subject(session: AsyncSession, subject_id: uuid.UUID) -> Subject:
    subject = await session.get(Subject, subject_id)
    if subject is None:
        raise NotFound("No subject with this id.")
    return subject


async def list_subjects(
    session: AsyncSession,
    *,
    email: str | None,
    category: str | None,
    limit: int,
    cursor: str | None,
) -> Page[SubjectPublic]:
    stmt = select(Subject).order_by(col(Subject.created_at), col(Subject.id)).limit(limit + 1)
    if email is not None:
        stmt = stmt.where(col(Subject.email) == email.strip().lower())
    if category is not None:
        stmt = stmt.where(col(Subject.category) == category)
    after = decode_time_cursor(cursor)
    if after is not None:
        at, last_id = after
        stmt = stmt.where(
            or_(
                col(Subject.created_at) > at,
                and_(col(Subject.created_at) == at, col(Subject.id) > last_id),
            )
        )
    rows = list((await session.execute(stmt)).scalars())
    return page_of(rows, limit, lambda s: encode_time_cursor(s.created_at, s.id), to_public)


def refuse_merged(subject: Any) -> None:
    """A subject merged into another takes no more writes: its reads follow the link, and a
    write landing on it would be hidden behind the survivor. The client writes there."""
    if subject.merged_into is not None:
        raise Conflict(
            f"The subject was merged into {subject.merged_into}: write to that subject.",
            merged_into=str(subject.merged_into),
        )


async def lock_subject(
    session: AsyncSession, subject_id: uuid.UUID, *, shared: bool = False
) -> Subject:
    """The subject row, locked for this transaction (updates and erasure never interleave).
    `shared` (FOR SHARE, as consent events take it): erasure and updates wait, other shared
    holders do not."""
    subject = (
        await session.execute(
            select(Subject)
            .where(col(Subject.id) == subject_id)
            .with_for_update(read=shared)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if subject is None:
        raise NotFound("No subject with this id.")
    return subject


async def update_subject(
    session: AsyncSession, principal: Principal, *, subject_id: uuid.UUID, data: SubjectUpdate
) -> Subject:
    # Locked: a concurrent erasure either finishes first (we then see it) or waits for us.
    subject = await lock_subject(session, subject_id)
    if subject.erased_at is not None:
        raise Conflict("The subject has been erased; it cannot be changed.")
    refuse_merged(subject)
    fields = data.model_dump(exclude_unset=True)
    for required in ("email", "category", "source"):
        if required in fields and fields[required] is None:
            raise Unprocessable(f"`{required}` cannot be removed.", field=required)
    if "category" in fields or "source" in fields:
        await _check_catalogue(session, fields.get("category"), fields.get("source"))
    if fields.get("email") and fields["email"] != subject.email:
        existing = await _live_id_for_email(session, fields["email"])
        if existing is not None:
            raise _email_taken(existing)
    old_hash = subject.email_hash
    for key, value in fields.items():
        setattr(subject, key, value)
    if "email" in fields:
        subject.email_hash = email_hash(fields["email"])
        subject.email_hash_key = newest_key().id
        await optouts.rekey_address(session, fields["email"])
    subject.updated_at = utcnow()
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        # A concurrent request took the e-mail between our check and our write. The
        # session cannot run another query now, so the id is not in this answer.
        raise Conflict("A live subject already has this e-mail.") from exc
    if old_hash and subject.email_hash != old_hash:
        await optouts.carry_to_new_address(session, old_hash, subject.email_hash)
    await audit.record(
        session, principal, "subject.update", "subject", subject.id, fields=sorted(fields)
    )
    # Sync clients propagate every change of held data (Art 19), an e-mail change above all.
    await changes.append(
        session, "subject.updated", subject_id=subject.id, email_hash=subject.email_hash
    )
    if fields.keys() & {"interest_ceased_at", "category"}:  # what its due date counts from
        await clock.schedule(session, [subject.id])
    return subject


REHASH = text("""
UPDATE subjects s SET email_hash = v.new, email_hash_key = :kid
FROM unnest(CAST(:ids AS uuid[]), CAST(:new AS text[])) AS v(id, new) WHERE s.id = v.id
""")


async def rehash(
    session: AsyncSession, ids: list[uuid.UUID], hashes: list[str], *, key_id: int
) -> None:
    """Store these subjects' address hashes as made by hash key `key_id` (a rotation)."""
    await session.execute(REHASH, {"ids": ids, "new": hashes, "kid": key_id})


# The same person held twice: a subject and every subject merged into it, at any depth (B
# merged into A, then A into C: C's reads include B's). Reads of a subject's records compose
# it as `subject_id IN (<LINKED_IDS>)` over the subject id `:s`; a subject never merged is
# one row, found by the partial index on `merged_into` (empty until a merge).
LINKED_IDS = """WITH RECURSIVE linked(id) AS (
  SELECT CAST(:s AS uuid)
  UNION SELECT m.id FROM subjects m JOIN linked l ON m.merged_into = l.id
) SELECT id FROM linked"""
LINKED = text(LINKED_IDS)


async def linked_ids(session: AsyncSession, subject_id: uuid.UUID) -> list[uuid.UUID]:
    """`subject_id` first, then every subject merged into it."""
    return list((await session.execute(LINKED, {"s": subject_id})).scalars())


async def lock_pair(
    session: AsyncSession, first: uuid.UUID, second: uuid.UUID
) -> tuple[Subject, Subject]:
    """Both subject rows FOR UPDATE, the lower id first: two merges of the same pair in
    opposite directions queue instead of deadlocking. Every writer of either (consent, bases,
    updates, erasure) waits until the merge commits; no other subject is locked."""
    low, high = sorted((first, second))
    locked = {low: await lock_subject(session, low), high: await lock_subject(session, high)}
    return locked[first], locked[second]


async def mark_merged(session: AsyncSession, merged: Subject, survivor: Subject) -> None:
    """The tombstone of a merge, on the locked rows: the link and when, and the survivor
    changed (its reads now include the merged one's); every other field stays as held."""
    now = utcnow()
    merged.merged_into, merged.merged_at, merged.updated_at = survivor.id, now, now
    survivor.updated_at = now
    await session.flush()
