"""EXPLAIN (ANALYZE, BUFFERS) of the statements whose cost should stay flat as data grows:
the single decision (DECIDE_AND_STORE) and consent event (LOOKUP_AND_WRITE), under the
generic plan the service's pool uses, and one audience chunk (the stream's range statement,
planned for its size as the stream does).
Each runs for real (it stores its decisions): run it on a benchmark database only."""

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from app.core.auth import Principal
from app.core.driver import SERVER_SETTINGS, Prepared
from app.models.consent import Evidence
from app.services.consent.events import _write_params
from app.services.consent.statements import LOOKUP_AND_WRITE
from app.services.gate.audiences import BULK_PLANNING, SCAN_LINES
from app.services.gate.decisions import DECIDE_STATEMENT

CHUNK = 5000  # subjects per audience range, about what the stream takes


def _literal(value: Any) -> str:
    """Our own values (ids, constants) as SQL literals for EXECUTE."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value).lower()
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, list):
        kind = "uuid[]" if any(isinstance(v, uuid.UUID) for v in value) else "text[]"
        return f"ARRAY[{', '.join(_literal(v) for v in value)}]::{kind}"
    return "'" + str(value).replace("'", "''") + "'"


async def _explain(con: asyncpg.Connection, statement: Prepared, **params: Any) -> Any:
    """PREPARE and EXPLAIN EXECUTE: the plan the session's plan_cache_mode picks, as for the
    service's own prepared statement (an EXPLAIN with bound parameters is planned for them)."""
    await con.execute(f"PREPARE bench_explained AS {statement.sql}")
    try:
        args = ", ".join(_literal(params[name]) for name in statement.names)
        sql = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bench_explained({args})"
        raw = await con.fetchval(sql)
    finally:
        await con.execute("DEALLOCATE bench_explained")
    return orjson.loads(raw)[0] if isinstance(raw, str) else raw[0]


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _walk(child))]


def summary(plan: dict[str, Any]) -> dict[str, Any]:
    """What grows: time, pages touched, and every sequential scan with the rows it read."""
    nodes = _walk(plan["Plan"])
    seq = [
        {"relation": n.get("Relation Name"), "rows": n["Actual Rows"] * n["Actual Loops"]}
        for n in nodes
        if n["Node Type"] == "Seq Scan"
    ]
    return {
        "execution_ms": round(plan["Execution Time"], 3),
        "planning_ms": round(plan.get("Planning Time", 0.0), 3),
        "shared_hit": plan["Plan"].get("Shared Hit Blocks", 0),
        "shared_read": plan["Plan"].get("Shared Read Blocks", 0),
        "seq_scans": seq,
        "index_scans": sum("Index" in n["Node Type"] for n in nodes),
    }


async def _consent_event(con: asyncpg.Connection, gate: dict[str, Any], subject: str) -> Any:
    """A consent withdrawn, with the parameters the service builds for a known subject id."""
    who = Principal(gate["key_id"], gate["key_name"], gate["key_role"], frozenset())
    params = _write_params(
        who, uuid.UUID(subject), purpose="content_subscriptions", recipient=None,
        action="withdrawn", method="web_form", policy="1", notice_text="Send me white papers.",
        evidence=Evidence(form_id="bench"), occurred_at=datetime.now(UTC),
    )  # fmt: skip
    return await _explain(con, LOOKUP_AND_WRITE, sid=uuid.UUID(subject), email=None, **params)


async def plans(connect: dict[str, Any], principal: dict[str, Any], subject: str) -> dict:
    """The decision for `subject`, a consent event for it, and the audience chunk of CHUNK
    subjects in the middle of the id order:
    {"decision"|"consent_event"|"audience_chunk": {"summary", "plan"}}."""
    con = await asyncpg.connect(**connect, server_settings=SERVER_SETTINGS)
    try:
        gate = {"recipient": None, "now": datetime.now(UTC), "grace_days": 0, **principal}
        decision = await _explain(
            con, DECIDE_STATEMENT, ids=[uuid.UUID(subject)], emails=[None],
            purpose="email_campaigns", **gate,
        )  # fmt: skip
        event = await _consent_event(con, gate, subject)
        mid = await con.fetchval("SELECT count(*) / 2 FROM subjects")
        nth = "SELECT id FROM subjects ORDER BY id OFFSET $1 LIMIT 1"
        after = await con.fetchval(nth, max(0, mid - CHUNK))
        upto = await con.fetchval(nth, mid)
        async with con.transaction():
            await con.execute(BULK_PLANNING)  # as the stream plans each chunk
            chunk = await _explain(
                con, SCAN_LINES, after=after, upto=upto, scan=None, take=None,
                purpose="day_to_day_communications", **gate,
            )  # fmt: skip
    finally:
        await con.close()
    return {
        "decision": {"summary": summary(decision), "plan": decision},
        "consent_event": {"summary": summary(event), "plan": event},
        "audience_chunk": {"summary": summary(chunk), "plan": chunk},
    }
