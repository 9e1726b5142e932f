"""Storing one batch: COPY into temporary staging tables, then set-based inserts that write
what the API's single writes write (subjects; bases with their history; consent notices,
events, current state and change-feed entries; consent as the basis where a row gives it for
a purpose without one), and one audit entry for the batch.

The staging tables live and die inside the batch's transaction (no session state, so this
works through PgBouncer in transaction mode)."""

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.crypto import hash_keys, newest_key
from app.models.imports import RowError
from app.services.audit import entries as audit
from app.services.bases.records import INSERT_BASIS, INSERT_BASIS_HISTORY, consent_basis_ctes
from app.services.changes import clock
from app.services.changes.feed import INSERT_CHANGE
from app.services.consent.statements import (
    INSERT_CONSENT_EVENT,
    INSERT_CONSENT_STATE,
    INSERT_NOTICE,
    NEWEST_EVENT_WINS,
)
from app.services.imports.rows import ValidRow
from app.services.optouts import records as optouts
from app.services.subjects.records import INSERT_SUBJECT

SUBJECT_COLUMNS = (
    "line", "id", "email", "email_hash", "name", "phone", "mobile", "job_title", "company",
    "business_address", "category", "source", "source_detail",
)  # fmt: skip
BASIS_COLUMNS = (
    "subject_id", "purpose", "basis", "contract_ref", "contract_start", "contract_end",
    "lia_ref", "obligation", "note", "value",
)  # fmt: skip
CONSENT_COLUMNS = (
    "ord", "subject_id", "email_hash", "purpose", "recipient", "action", "method",
    "policy_version", "notice_sha256", "notice_text", "form_id", "page_url", "user_agent",
    "occurred_at",
)  # fmt: skip

CREATE_STAGING = """
CREATE TEMP TABLE import_stg_subjects (
  line int, id uuid, email text, email_hash text, name text, phone text, mobile text,
  job_title text, company text, business_address text, category text, source text,
  source_detail text) ON COMMIT DROP;
CREATE TEMP TABLE import_stg_bases (
  subject_id uuid, purpose text, basis text, contract_ref text, contract_start timestamptz,
  contract_end timestamptz, lia_ref text, obligation text, note text, value jsonb)
  ON COMMIT DROP;
CREATE TEMP TABLE import_stg_consents (
  ord int, id uuid DEFAULT time_ordered_uuid(), subject_id uuid, email_hash text,
  purpose text, recipient text,
  action text, method text, policy_version text, notice_sha256 text, notice_text text,
  form_id text, page_url text, user_agent text, occurred_at timestamptz) ON COMMIT DROP
"""
DROP_STAGING = "DROP TABLE import_stg_subjects, import_stg_bases, import_stg_consents"

# `existing.settle` took the batch's rows of existing e-mails out before staging; a live
# subject found here took an e-mail since (a concurrent write): the batch is refused.
TAKEN = """
SELECT s.line FROM import_stg_subjects s
JOIN subjects t ON t.email = s.email AND t.erased_at IS NULL ORDER BY s.line
"""
# Each INSERT is the fact's own fragment, from the module that writes it one at a time.
INSERT_SUBJECTS = f"""
{INSERT_SUBJECT}
SELECT id, email, email_hash, CAST(:kid AS smallint), name, phone, mobile, job_title, company,
  business_address, category, source, source_detail, false, now(), now()
FROM import_stg_subjects ORDER BY line
"""  # noqa: S608 - constant SQL
INSERT_BASES = f"""
{INSERT_BASIS}
SELECT subject_id, purpose, basis, contract_ref, contract_start, contract_end, lia_ref,
  obligation, note, :actor, now()
FROM import_stg_bases
"""  # noqa: S608 - constant SQL
INSERT_BASES_HISTORY = f"""
{INSERT_BASIS_HISTORY}
SELECT subject_id, purpose, 'set', value, NULL, :actor, now() FROM import_stg_bases
"""  # noqa: S608 - constant SQL
INSERT_NOTICES = f"""
{INSERT_NOTICE}
SELECT DISTINCT ON (notice_sha256) notice_sha256, notice_text FROM import_stg_consents
WHERE notice_sha256 IS NOT NULL
ON CONFLICT DO NOTHING
"""  # noqa: S608 - constant SQL
INSERT_EVENTS = f"""
{INSERT_CONSENT_EVENT}
SELECT id, subject_id, purpose, recipient, action, method, policy_version, notice_sha256,
  form_id, page_url, user_agent, occurred_at, now(), CAST(:key_id AS uuid), :actor, NULL
FROM import_stg_consents ORDER BY ord
"""  # noqa: S608 - constant SQL
# The newest event per (subject, purpose, recipient) is the state; on a tie the later one
# in the input wins, as a later API write with the same occurred_at would. The subjects are
# new, so the rule of the single write (the newest wins) never has a row to compare with;
# it is there all the same, so that the two writes are one.
INSERT_STATE = f"""
{INSERT_CONSENT_STATE}
SELECT DISTINCT ON (subject_id, purpose, coalesce(recipient, ''))
  subject_id, purpose, coalesce(recipient, ''), action, id, occurred_at
FROM import_stg_consents
ORDER BY subject_id, purpose, coalesce(recipient, ''), occurred_at DESC, ord DESC
{NEWEST_EVENT_WINS}
"""  # noqa: S608 - constant SQL
# The change feed gets what the API's writes append one by one (sync needs every one):
# the subject created, each basis set, each consent event, in that order.
INSERT_CHANGES = f"""
{INSERT_CHANGE}
SELECT kind, subject_id, email_hash, purpose, now() FROM (
  SELECT 1 AS step, line AS ord, 'subject.created' AS kind, id AS subject_id, email_hash,
         CAST(NULL AS text) AS purpose
  FROM import_stg_subjects
  UNION ALL
  SELECT 2, s.line, 'basis.set', b.subject_id, s.email_hash, b.purpose
  FROM import_stg_bases b JOIN import_stg_subjects s ON s.id = b.subject_id
  UNION ALL
  SELECT 3, ord, 'consent.' || action, subject_id, email_hash, purpose
  FROM import_stg_consents
) feed ORDER BY step, ord
"""  # noqa: S608 - constant SQL
# Consent as the basis where a row gives consent for a purpose it records no basis for, as
# the single consent write does (the same fragment), after the row's own bases: the first
# consent given in the input is its source. No lock: the batch's subjects are new, and no
# other transaction sees them before this one commits.
INSERT_CONSENT_BASES = f"""
WITH given AS (
  SELECT DISTINCT ON (subject_id, purpose) subject_id, purpose, id AS event_id, email_hash
  FROM import_stg_consents WHERE action = 'given'
  ORDER BY subject_id, purpose, ord
),
{consent_basis_ctes("given")}
SELECT count(*) FROM consent_basis
"""  # noqa: S608 - constant SQL
# The batch's subjects' moments (contract dates, retention due dates) for the gate's clock.
SCHEDULE_MOMENTS = clock.schedule_sql("SELECT id FROM import_stg_subjects")
CHECKPOINT = """
INSERT INTO import_batches (sha256, input_sha256, batch, rows, committed_at)
VALUES (:sha, :input, :batch, :n, now())
"""


def _records(rows: list[ValidRow]) -> tuple[list[Any], list[Any], list[Any]]:
    subjects: list[Any] = []
    bases: list[Any] = []
    consents: list[Any] = []
    for row in rows:
        s = row.subject
        sid = s["id"]
        subjects.append(
            (row.line, sid, s["email"], s["email_hash"], s["name"], s["phone"], s["mobile"],
             s["job_title"], s["company"], s["business_address"], s["category"], s["source"],
             s["source_detail"])
        )  # fmt: skip
        for b in row.bases:
            bases.append(
                (sid, b["purpose"], b["basis"], b["contract_ref"], b["contract_start"],
                 b["contract_end"], b["lia_ref"], b["obligation"], b["note"],
                 orjson.dumps(b["value"]).decode())
            )  # fmt: skip
        for c in row.consents:
            ev = c["evidence"]
            consents.append(
                (len(consents), sid, s["email_hash"], c["purpose"],
                 c["recipient"], c["action"], c["method"], c["policy_version"],
                 c["notice_sha256"], c["notice_text"], ev.get("form_id"), ev.get("page_url"),
                 ev.get("user_agent"), c["occurred_at"])
            )  # fmt: skip
    return subjects, bases, consents


async def _stage(
    session: AsyncSession, rows: list[ValidRow]
) -> tuple[list[Any], list[Any], list[Any]]:
    """Create the staging tables and COPY the batch in; (subjects, bases, consents) records."""
    for statement in CREATE_STAGING.split(";"):
        await session.execute(text(statement))  # also opens the transaction for the COPY
    subjects, bases, consents = _records(rows)
    raw = (await (await session.connection()).get_raw_connection()).driver_connection
    assert raw is not None
    await raw.copy_records_to_table(
        "import_stg_subjects", records=subjects, columns=SUBJECT_COLUMNS
    )
    if bases:
        await raw.copy_records_to_table("import_stg_bases", records=bases, columns=BASIS_COLUMNS)
    if consents:
        await raw.copy_records_to_table(
            "import_stg_consents", records=consents, columns=CONSENT_COLUMNS
        )
    return subjects, bases, consents


async def _taken_emails(session: AsyncSession) -> list[RowError]:
    taken = [r[0] for r in await session.execute(text(TAKEN))]
    why = "a live subject already has this e-mail"
    return [RowError(line=line, field="email", why=why) for line in taken]


async def _insert_from_staging(
    session: AsyncSession, principal: Principal | None, *, bases: bool, consents: bool
) -> int:
    """Every insert of the batch; returns how many bases its consents recorded."""
    actor = principal.name if principal else "import"
    key_id = principal.key_id if principal else None
    await session.execute(text(INSERT_SUBJECTS), {"kid": newest_key().id})
    if bases:
        await session.execute(text(INSERT_BASES), {"actor": actor})
        await session.execute(text(INSERT_BASES_HISTORY), {"actor": actor})
    if consents:
        await session.execute(text(INSERT_NOTICES))
        await session.execute(text(INSERT_EVENTS), {"actor": actor, "key_id": key_id})
        await session.execute(text(INSERT_STATE))
    # Every batch: the subjects created and the bases set reach sync, consents or not.
    await session.execute(text(INSERT_CHANGES))
    consent_bases = 0
    if consents:  # after the consents' feed entries, as a single write appends them
        consent_bases = (await session.execute(text(INSERT_CONSENT_BASES))).scalar_one()
    await session.execute(text(SCHEDULE_MOMENTS), {"grace_days": clock.grace_days()})
    return int(consent_bases)


async def _rekey_optouts(session: AsyncSession, emails: list[str]) -> None:
    """Opt-outs stored under an older e-mail hash key (an erased person's) move to the newest
    key for the addresses imported, as a single create does. Nothing while one key."""
    keys = hash_keys(current_settings())
    if len(keys) > 1:
        pairs = [(old.hash(e), keys[0].hash(e)) for e in emails for old in keys[1:]]
        await optouts.rekey(session, pairs, key_id=keys[0].id)


async def store_batch(
    session: AsyncSession,
    principal: Principal | None,
    rows: list[ValidRow],
    *,
    sha256: str,
    input_sha256: str,
    batch: int,
) -> tuple[list[RowError], int, int]:
    """Store the batch in the session's transaction. Returns (errors, bases recorded: the
    rows' own and those their consents made, consents); on errors nothing is inserted and
    the caller must roll the transaction back."""
    subjects, bases, consents = await _stage(session, rows)
    errors = await _taken_emails(session)
    if errors:
        return errors, 0, 0
    consent_bases = await _insert_from_staging(
        session, principal, bases=bool(bases), consents=bool(consents)
    )
    await _rekey_optouts(session, [r.subject["email"] for r in rows])
    await audit.record(
        session,
        principal,
        "subject.import",
        "import_batch",
        sha256,
        input_sha256=input_sha256,
        batch=batch,
        subjects=len(subjects),
        bases=len(bases),
        consent_bases=consent_bases,
        consents=len(consents),
        lines=[rows[0].line, rows[-1].line] if rows else [],  # none: every e-mail existed
    )
    await session.execute(
        text(CHECKPOINT),
        {"sha": sha256, "input": input_sha256, "batch": batch, "n": len(rows)},
    )
    await session.execute(text(DROP_STAGING))
    return [], len(bases) + consent_bases, len(consents)
