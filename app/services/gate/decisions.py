"""The decision gate: Article 6 before any processing (DOMAIN.md, "The processing decision").

The nine rules live once, as the SQL in `REASONS_SQL`, evaluated by PostgreSQL over a set
of candidate subjects (the CTE `cand`). A single decision, a batch and an audience export
differ only in how `cand` is built, so they cannot disagree. Each call is one statement:
evaluate, store every decision, append its audit entry (one for the statement: the row of a
single decision, or the count and SHA-256 of a batch's rows).
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.driver import Conn, Prepared, Row, UnitOfWork, connection_of, prepare
from app.models.base import utcnow
from app.models.decision import BatchDecisionItem, DecisionPublic
from app.services.audit import statements as audit_statements
from app.services.audit.entries import INSERT_AUDIT_ENTRY
from app.services.catalogue.known import unknown_key

# A subject's contracts, now and in the basis history (an ended or replaced contract ended
# when it was ended, or at its own end date if that came first): whether one is running,
# and when the last one ended. Retention (§7) counts from there; with none ever, from creation.
CONTRACTS = """
SELECT bool_or(x.running) AS running, max(x.ended) AS last_end FROM (
  SELECT lb.contract_end IS NULL OR lb.contract_end > :now AS running, lb.contract_end AS ended
  FROM lawful_bases lb WHERE lb.subject_id = {subject} AND lb.basis = 'contract'
  UNION ALL
  SELECT false, least(coalesce((h.previous ->> 'contract_end')::timestamptz, h.at), h.at)
  FROM lawful_basis_history h
  WHERE h.subject_id = {subject} AND h.previous ->> 'basis' = 'contract'
) x
"""

# Re-consent: a policy version naming the purpose in `reconsent_purposes` makes a consent
# given under an earlier version stop counting from its own publication. Versions are
# ordered by (published_at, or created_at when unpublished; created_at; version); a consent
# whose version is unknown counts as earlier. `{state}` is a consent_state row.
# One statement decides, stores and audits (a single decision or a batch): atomic by
# itself, committed in one round trip.
UNIT_OF_WORK = UnitOfWork.STATEMENT

CONSENT_OUTDATED = """EXISTS (
  SELECT 1 FROM policies np
  LEFT JOIN consent_events ce ON ce.id = {state}.event_id
  LEFT JOIN policies cp ON cp.version = ce.policy_version
  WHERE {state}.purpose = ANY (np.reconsent_purposes)
    AND coalesce(np.published_at, np.created_at) <= :now
    AND (cp.id IS NULL
         OR (coalesce(cp.published_at, cp.created_at), cp.created_at, cp.version)
          < (coalesce(np.published_at, np.created_at), np.created_at, np.version)))"""

# When a consent runs out: its state's `occurred_at` (the newest `given`: a fresh one starts a
# new period) plus the purpose's `consent_valid_months`; NULL where the purpose sets no
# period. `{state}` is a consent_state row, `{purpose}` its purposes row. The gate, the
# clock's `consent.expired` moments and the refresh report all read this one expression.
CONSENT_EXPIRES_AT = (
    "({state}.occurred_at + make_interval(months => {purpose}.consent_valid_months))"
)

# Every reason that applies, in the order of DOMAIN.md. `live` = known, not erased and not
# merged into another: the rules after 1 speak of a subject that exists in its own right.
# Parameters: :purpose, :recipient, :now, :grace_days. Retention's due date is the SQL
# function `retention_due_at` (migration 0009), shared with the retention sweep.
REASONS_SQL = f"""
SELECT c.ord, s.id AS subject_id, CASE WHEN live.ok THEN b.basis END AS basis,
  s.merged_into,
  array_remove(ARRAY[
    CASE WHEN s.id IS NULL THEN 'subject_unknown' END,
    CASE WHEN s.erased_at IS NOT NULL THEN 'subject_erased' END,
    -- The same person held twice: the survivor answers for both (subjects/merge.py).
    CASE WHEN s.erased_at IS NULL AND s.merged_into IS NOT NULL THEN 'subject_merged' END,
    CASE WHEN live.ok AND s.restricted THEN 'restricted' END,
    CASE WHEN live.ok AND retention_due_at(cat.retention_rule, cat.retention_months,
           s.created_at, s.interest_ceased_at, ct.last_end, ct.running, :grace_days) <= :now
         THEN 'retention_expired' END,
    CASE WHEN live.ok AND b.basis IS NULL THEN 'no_lawful_basis' END,
    CASE WHEN live.ok AND b.basis <> ALL (p.allowed_bases) THEN 'basis_not_allowed' END,
    CASE WHEN live.ok AND b.basis = 'consent' AND cs.status IS NULL
         THEN 'consent_missing' END,
    CASE WHEN live.ok AND b.basis = 'consent' AND cs.status = 'withdrawn'
         THEN 'consent_withdrawn' END,
    CASE WHEN live.ok AND b.basis = 'consent' AND cs.status = 'given'
          AND {CONSENT_OUTDATED.format(state="cs")} THEN 'consent_outdated' END,
    CASE WHEN live.ok AND b.basis = 'consent' AND cs.status = 'given'
          AND {CONSENT_EXPIRES_AT.format(state="cs", purpose="p")} <= :now
         THEN 'consent_expired' END,
    CASE WHEN live.ok AND b.basis = 'contract'
          AND (b.contract_start > :now OR b.contract_end <= :now) THEN 'contract_ended' END,
    CASE WHEN live.ok AND b.basis = 'legitimate_interests' AND ob.subject_id IS NOT NULL
         THEN 'objected' END,
    CASE WHEN live.ok AND p.direct_marketing AND EXISTS (
           SELECT 1 FROM marketing_optouts o WHERE o.email_hash = s.email_hash)
         THEN 'marketing_opt_out' END,
    CASE WHEN live.ok AND NOT rc.inside_eea_uk AND rc.transfer_safeguard = 'explicit_consent'
          AND (tc.status IS DISTINCT FROM 'given' OR {CONSENT_OUTDATED.format(state="tc")})
         THEN 'transfer_not_permitted' END,
    -- §6 recipients: only one the catalogue lists for this purpose may receive the data.
    CASE WHEN live.ok AND rc.key IS NOT NULL AND p.key <> ALL (rc.purposes)
         THEN 'recipient_not_for_purpose' END
  ]::text[], NULL) AS reasons
FROM cand c
LEFT JOIN subjects s ON s.id = c.subject_id
CROSS JOIN LATERAL (
  SELECT s.id IS NOT NULL AND s.erased_at IS NULL AND s.merged_into IS NULL AS ok) live
JOIN purposes p ON p.key = :purpose
LEFT JOIN recipients rc ON rc.key = :recipient
LEFT JOIN categories cat ON cat.key = s.category
LEFT JOIN lawful_bases b ON b.subject_id = s.id AND b.purpose = p.key
LEFT JOIN consent_state cs ON cs.subject_id = s.id AND cs.purpose = p.key AND cs.recipient = ''
LEFT JOIN consent_state tc ON tc.subject_id = s.id AND tc.purpose = 'international_transfer'
  AND tc.recipient = rc.key
LEFT JOIN objections ob ON ob.subject_id = s.id AND ob.purpose = p.key
LEFT JOIN LATERAL ({CONTRACTS.format(subject="s.id")}) ct ON true
WHERE (:recipient IS NULL OR rc.key IS NOT NULL)
"""

# Candidates named by id or by e-mail, in request order (`ord`).
REFERENCED_CANDIDATES = """
SELECT r.ord,
  COALESCE(r.ref_id, (SELECT s2.id FROM subjects s2
                      WHERE s2.email = r.ref_email AND s2.erased_at IS NULL)) AS subject_id
FROM unnest(CAST(:ids AS uuid[]), CAST(:emails AS text[]))
  WITH ORDINALITY AS r(ref_id, ref_email, ord)
"""

# Storing evaluated decisions and their audit entries: CTEs over a set `{recorded}` of
# evaluated rows (a batch stores them all; an audience page the ones it hands out). Their
# ids are time-ordered (`time_ordered_uuid()`, migration 0014): new keys append to the
# primary key's index instead of landing on random pages of it.
INSERT_DECISIONS = """INSERT INTO decisions (id, decided_at, requester_key_id, requester_name,
    requester_role, subject_id, purpose, recipient, allowed, basis, reasons)
  SELECT id, :now, :key_id, :key_name, :key_role, subject_id, :purpose, :recipient,
         cardinality(reasons) = 0, basis, reasons
  FROM {recorded}"""
# A single decision: its row and an entry recording the row itself.
STORE_CTES = """
stored AS (
  {insert}
  RETURNING id, subject_id, allowed, reasons
),
audited AS (
  {INSERT_AUDIT_ENTRY}
  SELECT :key_id, :key_name, :key_role, 'decision.create', 'decision', id::text,
         jsonb_build_object('subject_id', subject_id, 'purpose', CAST(:purpose AS text),
                            'recipient', CAST(:recipient AS text), 'allowed', allowed,
                            'reasons', to_jsonb(reasons))
  FROM stored
)
""".replace("{INSERT_AUDIT_ENTRY}", INSERT_AUDIT_ENTRY).replace("{insert}", INSERT_DECISIONS)
# A statement storing many (a batch, an audience chunk, a push by ids): the rows and ONE
# entry holding their count, id range and SHA-256 (app.services.audit.statements), computed
# by PostgreSQL from the rows as stored, in the same statement. The rows' ids must come from
# `STATEMENT_ID_CTE` and `statement_id(ord)`, so that the range holds this statement's only.
STORE_MANY_CTES = (
    """
stored AS (
  {insert}
  RETURNING *
),
audited AS (
  {INSERT_AUDIT_ENTRY}
  {entry}
)
""".replace("{INSERT_AUDIT_ENTRY}", INSERT_AUDIT_ENTRY)
    .replace("{entry}", audit_statements.entry_select("stored"))
    .replace("{insert}", INSERT_DECISIONS)
)
STATEMENT_ID_CTE = "stmt AS MATERIALIZED (SELECT uuid_send(time_ordered_uuid()) AS prefix)"


def statement_id(ord_column: str) -> str:
    """The id of a statement's decision for candidate `ord_column` (joined with `stmt`)."""
    return audit_statements.STATEMENT_IDS.format(base="stmt.prefix", ord=ord_column)


DECIDE_AND_STORE = f"""
WITH cand AS ({REFERENCED_CANDIDATES}),
evaluated AS MATERIALIZED (
  SELECT time_ordered_uuid() AS id, e.* FROM ({REASONS_SQL}) e
),
{STORE_CTES.format(recorded="evaluated")}
SELECT id, ord, subject_id, basis, reasons, merged_into FROM evaluated ORDER BY ord
"""
DECIDE_MANY_AND_STORE = f"""
WITH cand AS ({REFERENCED_CANDIDATES}),
{STATEMENT_ID_CTE},
evaluated AS MATERIALIZED (
  SELECT {statement_id("e.ord")} AS id, e.* FROM ({REASONS_SQL}) e CROSS JOIN stmt
),
{STORE_MANY_CTES.format(recorded="evaluated")}
SELECT id, ord, subject_id, basis, reasons, merged_into FROM evaluated ORDER BY ord
"""


# The gate's parameters typed for the driver: what PostgreSQL cannot infer (NULLs).
GATE_CASTS = {
    "purpose": "varchar",
    "recipient": "varchar",
    "now": "timestamptz",
    "grace_days": "integer",
}
# Run on the driver connection (app.core.driver): one round trip, no BEGIN/COMMIT around it
# in autocommit mode.
DECIDE_STATEMENT = prepare(DECIDE_AND_STORE, **GATE_CASTS)
DECIDE_MANY_STATEMENT = prepare(DECIDE_MANY_AND_STORE, **GATE_CASTS)
CATALOGUE_KEYS = prepare(
    "SELECT EXISTS (SELECT 1 FROM purposes WHERE key = :p),"
    " EXISTS (SELECT 1 FROM recipients WHERE key = :r)",
    p="text",
    r="text",
)


async def _explain_empty(con: Conn, purpose: str, recipient: str | None) -> None:
    """No rows came back: the purpose or recipient is not in the catalogue (error path only)."""
    row = await CATALOGUE_KEYS.fetchrow(con, p=purpose, r=recipient)
    assert row is not None
    if not row[0]:
        raise await unknown_key(con, "purpose", purpose, field="purpose")
    if recipient is not None and not row[1]:
        raise await unknown_key(con, "recipient", recipient, field="recipient")


async def _evaluate(
    con: Conn,
    principal: Principal,
    refs: Sequence[uuid.UUID | str],
    purpose: str,
    recipient: str | None,
    now: datetime,
    statement: Prepared = DECIDE_STATEMENT,
) -> list[Row]:
    ids = [r if isinstance(r, uuid.UUID) else None for r in refs]
    emails = [None if isinstance(r, uuid.UUID) else r.strip().lower() for r in refs]
    rows = await statement.fetch(
        con,
        ids=ids,
        emails=emails,
        purpose=purpose,
        recipient=recipient,
        now=now,
        grace_days=current_settings().retention_prospect_grace_days,
        key_id=principal.key_id,
        key_name=principal.name,
        key_role=principal.role,
    )
    if not rows:
        await _explain_empty(con, purpose, recipient)
    return rows


def _item(row: Row, purpose: str, recipient: str | None, now: datetime) -> dict[str, Any]:
    """A decision as DecisionPublic serialises it (same fields, same order); `merged_into`
    is set only for a merged subject (where to ask instead), null otherwise."""
    item = {
        "id": row["id"],
        "subject_id": row["subject_id"],
        "purpose": purpose,
        "recipient": recipient,
        "allowed": not row["reasons"],
        "basis": row["basis"],
        "reasons": row["reasons"],
        "decided_at": now,
        "merged_into": row["merged_into"],
    }
    return item


async def decision_payload(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    subject: uuid.UUID | str,
    purpose: str,
    recipient: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Allow or deny processing `subject`'s data for `purpose` (to `recipient`), stored:
    the DecisionPublic document, ready to encode."""
    now = now or utcnow()
    driver = await connection_of(con)
    (row,) = await _evaluate(driver, principal, [subject], purpose, recipient, now)
    return _item(row, purpose, recipient, now)


async def batch_payload(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    subjects: Sequence[uuid.UUID | str],
    purpose: str,
    recipient: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The same decision for many subjects, in one statement: the BatchDecisionPublic
    document, items in request order."""
    now = now or utcnow()
    driver = await connection_of(con)
    rows = await _evaluate(
        driver, principal, subjects, purpose, recipient, now, DECIDE_MANY_STATEMENT
    )
    items = []
    for row in rows:
        item = _item(row, purpose, recipient, now)
        item["subject"] = str(subjects[row["ord"] - 1])
        items.append(item)
    return {"purpose": purpose, "recipient": recipient, "items": items}


async def decide(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    subject: uuid.UUID | str,
    purpose: str,
    recipient: str | None = None,
    now: datetime | None = None,
) -> DecisionPublic:
    """`decision_payload` as a model (for Python callers)."""
    payload = await decision_payload(
        con, principal, subject=subject, purpose=purpose, recipient=recipient, now=now
    )
    return DecisionPublic(**payload)


async def decide_batch(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    subjects: Sequence[uuid.UUID | str],
    purpose: str,
    recipient: str | None = None,
    now: datetime | None = None,
) -> list[BatchDecisionItem]:
    """`batch_payload`'s items as models (for Python callers)."""
    payload = await batch_payload(
        con, principal, subjects=subjects, purpose=purpose, recipient=recipient, now=now
    )
    return [BatchDecisionItem(**item) for item in payload["items"]]
