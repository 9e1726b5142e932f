"""What an operator watches: the audit sealer's and the feed sequencer's backlogs in
/metrics, /readyz degraded (still 200) when the chain stops being sealed, and background
tasks that log their failure's traceback and carry on after a back-off."""

import asyncio
import logging
import re

import pytest
from sqlalchemy import text

from app.background import LAST_SUCCESS, supervised
from app.core.signing import get_signer
from app.services.audit.chain import seal_pending

OLD_ENTRY = text(
    "INSERT INTO audit_entries (at, actor_name, actor_role, action, entity, digest)"
    " VALUES (now() - interval '2 hours', 'test', 'admin', 'test.stalled', 'test', '{}')"
)


def _gauge(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.M)
    assert found, name
    return float(found.group(1))


async def test_a_stalled_sealer_makes_readyz_degraded_and_shows_in_metrics(
    client, db, auditor, test_settings
):
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    await db.execute(OLD_ENTRY)
    await db.execute(text("INSERT INTO changes (kind, at) VALUES ('test.unsequenced', now())"))
    r = await client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded" and "not been sealed for" in body["reason"], body
    metrics = (await client.get("/metrics", headers=auditor)).text
    unsealed = (
        await db.execute(text("SELECT count(*) FROM audit_entries WHERE position IS NULL"))
    ).scalar_one()
    assert _gauge(metrics, "consent_audit_unsealed_entries") == unsealed >= 1
    assert _gauge(metrics, "consent_audit_seal_lag_seconds") >= 7200
    backlog = (await db.execute(text("SELECT count(*) FROM changes WHERE seq IS NULL"))).scalar()
    assert _gauge(metrics, "consent_changes_backlog") == backlog >= 1
    assert "consent_api_gate_moments_pending" in metrics
    # The sealer catches up: ready again, the stalled entry sealed.
    assert await seal_pending(db, get_signer(test_settings)) >= 1
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    metrics = (await client.get("/metrics", headers=auditor)).text
    unsealed = (
        await db.execute(text("SELECT count(*) FROM audit_entries WHERE position IS NULL"))
    ).scalar_one()
    assert _gauge(metrics, "consent_audit_unsealed_entries") == unsealed
    assert _gauge(metrics, "consent_audit_seal_lag_seconds") < 7200


@pytest.mark.pg_independent
async def test_a_failing_background_task_logs_its_traceback_and_backs_off(caplog):
    runs, pauses = [], []

    async def step() -> None:
        runs.append(len(runs))
        if len(runs) <= 3:
            raise RuntimeError("database went away")

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 5:
            raise asyncio.CancelledError

    caplog.set_level(logging.WARNING, logger="consent_api.sealer")
    with pytest.raises(asyncio.CancelledError):
        await supervised("test task", step, 0.5, sleep=sleep)
    assert pauses == [2.0, 4.0, 8.0, 0.5, 0.5]  # doubling after failures, then the interval
    failures = [r for r in caplog.records if r.message.startswith("test task failed")]
    assert len(failures) == 3
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failures)
    assert LAST_SUCCESS.labels(task="test task")._value.get() > 0
