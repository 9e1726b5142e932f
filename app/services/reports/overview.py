"""The auditor's overview: open rights requests and their deadlines, consent and opt-outs
by month, decisions by reason over 30 days, and the audit chain's state. Read-only, except
that verifying the chain seals what is pending first (as GET /v1/audit/verify does)."""

from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.signing import Signer
from app.models.base import utcnow
from app.models.rights import OPEN_STATUSES
from app.services.audit import chain as audit_chain
from app.services.rights.deadlines import receipt_day, today_uk

MONTHS = 12
OPEN_REQUESTS = text(
    "SELECT id, type, status, received_at, due_at, paused_since FROM rights_requests"
    " WHERE status = ANY(:open) ORDER BY due_at, received_at, id"
)
# Months on the UK calendar, like every other date the service shows.
CONSENT_BY_MONTH = text("""
SELECT to_char(timezone('Europe/London', occurred_at), 'YYYY-MM') AS month, purpose, action,
       count(*) AS n
FROM consent_events WHERE occurred_at >= :since GROUP BY 1, 2, 3
""")
OPTOUTS_BY_MONTH = text("""
SELECT to_char(timezone('Europe/London', created_at), 'YYYY-MM') AS month, count(*) AS n
FROM marketing_optouts WHERE created_at >= :since GROUP BY 1
""")
DECISIONS = text("""
SELECT count(*) FILTER (WHERE allowed) AS allowed, count(*) FILTER (WHERE NOT allowed) AS denied
FROM decisions WHERE decided_at >= :since
""")
DENY_REASONS = text("""
SELECT reason, count(*) AS n FROM decisions, unnest(reasons) AS reason
WHERE decided_at >= :since GROUP BY reason ORDER BY n DESC, reason
""")
CHAIN = text("""
SELECT (SELECT max(position) FROM audit_entries) AS last_position,
       (SELECT count(*) FROM audit_entries WHERE position IS NULL) AS unsealed,
       cp.position AS checkpoint_position, cp.signed_at AS checkpoint_at
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT position, signed_at FROM audit_checkpoints
                   ORDER BY position DESC LIMIT 1) cp ON true
""")


def _months(today: date) -> list[str]:
    first = today.replace(day=1)
    out = []
    for _ in range(MONTHS):
        out.append(first.strftime("%Y-%m"))
        first = (first - timedelta(days=1)).replace(day=1)
    return out[::-1]


async def _requests(session: AsyncSession, today: date) -> list[dict[str, Any]]:
    rows = (await session.execute(OPEN_REQUESTS, {"open": list(OPEN_STATUSES)})).all()
    return [
        {
            "id": str(r.id),
            "type": r.type,
            "status": r.status,
            # The day on the UK calendar, as its deadline counts it (not UTC's).
            "received_at": receipt_day(r.received_at).isoformat(),
            "due_at": r.due_at.isoformat(),
            "days_left": (r.due_at - today).days,
            # A stopped clock is not overdue (as GET /v1/rights-requests?overdue=true says).
            "paused": r.paused_since is not None,
            "overdue": r.due_at < today and r.paused_since is None,
        }
        for r in rows
    ]


async def _consent(session: AsyncSession, months: list[str]) -> dict[str, Any]:
    since = utcnow() - timedelta(days=31 * MONTHS + 1)
    by_purpose: dict[str, dict[str, dict[str, int]]] = {}
    totals = {m: {"given": 0, "withdrawn": 0, "opt_outs": 0} for m in months}
    for r in await session.execute(CONSENT_BY_MONTH, {"since": since}):
        if r.month not in totals:
            continue
        cell = by_purpose.setdefault(r.purpose, {}).setdefault(
            r.month, {"given": 0, "withdrawn": 0}
        )
        cell[r.action] = int(r.n)
        totals[r.month][r.action] += int(r.n)
    for r in await session.execute(OPTOUTS_BY_MONTH, {"since": since}):
        if r.month in totals:
            totals[r.month]["opt_outs"] = int(r.n)
    return {"months": months, "totals": totals, "by_purpose": dict(sorted(by_purpose.items()))}


async def overview(session: AsyncSession, signer: Signer) -> dict[str, Any]:
    today = today_uk()
    since = utcnow() - timedelta(days=30)
    decisions = (await session.execute(DECISIONS, {"since": since})).one()
    reasons = {r.reason: int(r.n) for r in await session.execute(DENY_REASONS, {"since": since})}
    verification = await audit_chain.verify_one_at_a_time(session, signer)
    chain = (await session.execute(CHAIN)).one()
    requests = await _requests(session, today)
    return {
        "generated_at": utcnow().isoformat(),
        "today": today.isoformat(),
        "rights_requests": {
            "open": len(requests),
            "overdue": sum(1 for r in requests if r["overdue"]),
            "items": requests,
        },
        "consent": await _consent(session, _months(today)),
        "decisions_30_days": {
            "allowed": int(decisions.allowed),
            "denied": int(decisions.denied),
            "deny_reasons": reasons,
        },
        "audit_chain": {
            "last_sealed_position": chain.last_position or 0,
            "unsealed": int(chain.unsealed),
            "last_checkpoint_position": chain.checkpoint_position,
            "last_checkpoint_at": chain.checkpoint_at.isoformat() if chain.checkpoint_at else None,
            "verify": verification.__dict__,
        },
    }
