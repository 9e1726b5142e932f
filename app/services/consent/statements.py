"""The consent write's SQL: what a consent needs to know, and the one write of its facts (the
notice, the event, the current state, the change-feed and audit entries, and consent as the
basis where none is recorded), as fragments that every writer composes: this package's
single writes and the import's set-based batch."""

from sqlalchemy import text

from app.core.driver import prepare
from app.services.audit.entries import INSERT_AUDIT_ENTRY
from app.services.bases.records import CONSENT_BASIS_AUDITED, LOCK_BASES, consent_basis_ctes
from app.services.catalogue.controller import IDENTITY_SQL
from app.services.changes.clock import consent_moment_ctes
from app.services.changes.feed import INSERT_CHANGE
from app.services.optouts.objections import INSERT_OBJECTION

# What a consent needs to know: the subject, the purpose, the policy version and the
# recipient (each NULL when unknown), and what the receipt shows (the controller included).
CONTEXT = f"""
SELECT s.id AS subject_id, s.email_hash, s.erased_at, s.merged_into,
       p.key AS purpose_key, p.description, p.direct_marketing,
       pol.version AS policy_version, pol.url AS policy_url,
       (SELECT key FROM recipients WHERE key = CAST(:recipient AS text)) AS recipient_key,
       ARRAY(SELECT name FROM recipients WHERE CAST(:purpose AS text) = ANY (purposes)
             ORDER BY name) AS third_parties,
       {IDENTITY_SQL} AS controller
FROM (SELECT 1) one
LEFT JOIN subjects s ON s.id = CAST(:sid AS uuid)
     OR (s.email = CAST(:email AS text) AND s.erased_at IS NULL)
LEFT JOIN purposes p ON p.key = CAST(:purpose AS text)
LEFT JOIN policies pol ON pol.version = CAST(:policy AS text)
"""  # noqa: S608 - constant SQL
LOOKUP = prepare(CONTEXT)

# The one write of a consent event's facts, as fragments every writer composes (this
# module's single writes, and the import's set-based batch): the notice, the event, the
# current state where the newest `occurred_at` wins, then the feed and audit entries.
INSERT_NOTICE = "INSERT INTO consent_notices (sha256, text)"
INSERT_CONSENT_EVENT = """INSERT INTO consent_events (id, subject_id, purpose, recipient,
    action, method, policy_version, notice_sha256, form_id, page_url, user_agent,
    occurred_at, recorded_at, recorded_by_key_id, recorded_by, conflict)"""
INSERT_CONSENT_STATE = (
    "INSERT INTO consent_state (subject_id, purpose, recipient, status, event_id, occurred_at)"
)
# A later `occurred_at` replaces the state; an earlier one (a late delivery) does not.
NEWEST_EVENT_WINS = """ON CONFLICT (subject_id, purpose, recipient) DO UPDATE
    SET status = EXCLUDED.status, event_id = EXCLUDED.event_id,
        occurred_at = EXCLUDED.occurred_at
    WHERE consent_state.occurred_at <= EXCLUDED.occurred_at"""

# Storing one event: the notice, the event, the current state (and the instant the gate's
# clock keeps for its end, where the purpose sets a period), the change-feed entry and the
# audit entry, and for a consent given where no basis is recorded, consent as the basis
# (bases/records.py). `{proceed}` is a condition the subject row must meet besides being live.
WRITE_CTES = f"""
shared AS (
  -- Waits for a concurrent erasure and then sees it: no evidence lands on an erased subject.
  SELECT id, email_hash FROM subjects
  WHERE id = CAST(:subject_id AS uuid) AND erased_at IS NULL AND merged_into IS NULL
    AND {{proceed}}
  FOR SHARE
),
live AS MATERIALIZED (
  -- Then the subject's basis writers one at a time, as a basis PUT takes them (row, then
  -- this lock), before anything else is written: every write below depends on `live`. A
  -- withdrawal takes it too, so that a transaction writing several events (GPC, a rights
  -- request, the preference page) never holds an event's row while waiting for this lock.
  SELECT id, email_hash, {LOCK_BASES.format(subject="id")} AS bases_locked FROM shared
),
notice AS (
  {INSERT_NOTICE}
  SELECT CAST(:notice_sha AS text), CAST(:notice_text AS text)
  WHERE CAST(:notice_sha AS text) IS NOT NULL AND EXISTS (SELECT 1 FROM live)
  ON CONFLICT DO NOTHING
),
ev AS (
  -- A new event's id is time-ordered (migration 0014), as a decision's: it appends to the
  -- primary key's index instead of dirtying a random page of it (and, after a checkpoint,
  -- writing that page whole to the WAL) on every event. `:id` is set where it is known
  -- beforehand (a confirmed double opt-in).
  {INSERT_CONSENT_EVENT}
  SELECT coalesce(CAST(:id AS uuid), time_ordered_uuid()), live.id, CAST(:purpose AS text),
    CAST(:recipient AS text),
    CAST(:action AS text), CAST(:method AS text), CAST(:policy AS text),
    CAST(:notice_sha AS text), CAST(:form_id AS text), CAST(:page_url AS text),
    CAST(:user_agent AS text), CAST(:occurred_at AS timestamptz), now(),
    CAST(:key_id AS uuid), CAST(:key_name AS text), CAST(:conflict AS text)
  FROM live
  RETURNING *
),
state AS (
  {INSERT_CONSENT_STATE}
  SELECT subject_id, purpose, coalesce(recipient, ''), action, id, occurred_at FROM ev
  {NEWEST_EVENT_WINS}
  RETURNING subject_id, purpose, recipient, status, occurred_at
),
{consent_moment_ctes("state")},
feed AS (
  {INSERT_CHANGE}
  SELECT 'consent.' || ev.action, ev.subject_id, live.email_hash, ev.purpose, ev.recorded_at
  FROM ev CROSS JOIN live
  RETURNING subject_id
),
audited AS (
  {INSERT_AUDIT_ENTRY}
  SELECT :key_id, :key_name, :key_role, 'consent.' || action, 'consent_event', id::text,
    jsonb_build_object('subject_id', subject_id, 'purpose', purpose, 'recipient', recipient,
                       'method', method, 'policy_version', policy_version,
                       'notice_sha256', notice_sha256, 'conflict', conflict)
  FROM ev
),
given AS (
  -- After `feed`: the feed says `consent.given` before the `basis.set` it causes.
  SELECT ev.subject_id, ev.purpose, ev.id AS event_id, live.email_hash
  FROM ev CROSS JOIN live CROSS JOIN feed WHERE ev.action = 'given'
),
{consent_basis_ctes("given")},
{CONSENT_BASIS_AUDITED}
"""  # noqa: S608 - constant SQL


def write_ctes(proceed: str) -> str:
    """WRITE_CTES with the condition `proceed` (SQL) on the subject row."""
    return WRITE_CTES.replace("{proceed}", proceed)


WRITE = prepare("WITH" + write_ctes("true") + "SELECT * FROM ev")  # noqa: S608 - constant SQL

# The usual consent (a known subject id, no GPC) in one round trip: the lookup, and the
# write only where the lookup found everything the request names (and the controller the
# receipt names). The lookup's columns
# come back beside the event's (the event's are NULL when nothing was written).
EVERYTHING_NAMED_IS_KNOWN = """(
  SELECT c.purpose_key IS NOT NULL AND c.controller IS NOT NULL
    AND (CAST(:policy AS text) IS NULL OR c.policy_version IS NOT NULL)
    AND (CAST(:recipient AS text) IS NULL OR c.recipient_key IS NOT NULL)
  FROM ctx c)"""
CONTEXT_BESIDE_EVENT = """
SELECT c.subject_id AS known_subject_id, c.email_hash AS known_email_hash,
  c.merged_into AS known_merged_into, c.purpose_key, c.description, c.direct_marketing,
  c.policy_version AS known_policy_version,
  c.policy_url, c.recipient_key, c.third_parties, c.controller, ev.*
FROM ctx c LEFT JOIN ev ON true"""
LOOKUP_AND_WRITE = prepare(
    f"WITH ctx AS ({CONTEXT})," + write_ctes(EVERYTHING_NAMED_IS_KNOWN) + CONTEXT_BESIDE_EVENT
)

# A new objection goes into the change feed with it (sync must stop pushing the subject).
OBJECT = prepare(f"""
WITH o AS (
  {INSERT_OBJECTION}
  VALUES (:subject_id, :purpose, :source, now())
  ON CONFLICT (subject_id, purpose) DO NOTHING
  RETURNING subject_id, purpose
)
{INSERT_CHANGE}
SELECT 'objection', subject_id, CAST(:email_hash AS text), purpose, now() FROM o
""")  # noqa: S608 - constant SQL
CURRENT = prepare(
    "SELECT status, event_id FROM consent_state WHERE subject_id = :s"
    " AND purpose = :p AND recipient = ''"
)

# A merge (subjects/merge.py): the merged subject's current state per purpose and recipient
# offered to the survivor under the one rule of the ledger, the newest `occurred_at` wins,
# so per purpose the newest event across both decides. The state keeps pointing at the
# event it came from (still the merged subject's, never rewritten). Returns what it took.
CARRY_STATE = text(f"""
{INSERT_CONSENT_STATE}
SELECT CAST(:into AS uuid), purpose, recipient, status, event_id, occurred_at
FROM consent_state WHERE subject_id = CAST(:from_id AS uuid)
{NEWEST_EVENT_WINS}
RETURNING purpose, recipient, status
""")  # noqa: S608 - constant SQL
