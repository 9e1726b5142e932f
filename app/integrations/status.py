"""`consent-api sync status` and `consent-api sync mailchimp --setup-webhook`: what the
workers have done and what waits, and the list's webhook. Counts and keyed hashes only."""

from typing import Any

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.integrations.mailchimp import MailchimpApi
from app.integrations.mailchimp_webhook import setup_webhook
from app.integrations.reconcile import Counts
from app.integrations.runner import in_transaction
from app.services.sync import outbox, state

SHOWN = 100
COUNTS = list(Counts().as_dict())  # in this order (the database keeps no order)


async def status_lines(settings: Settings, database_url: str) -> list[str]:
    engine = create_engine(database_url, settings)
    try:
        maker = create_sessionmaker(engine)
        targets = await in_transaction(maker, state.positions)
        page = await in_transaction(maker, outbox.failures, target=None, limit=SHOWN, cursor=None)
    finally:
        await engine.dispose()
    lines = [_position(t) for t in targets] or ["no sync has run yet"]
    lines.append(f"failures: {len(page.items)}{'+' if page.next_cursor else ''}")
    lines += [_failure(f) for f in page.items]
    return lines


def _position(t: Any) -> str:
    reconciled = "never"
    if t.reconciled_at is not None:
        summary = t.reconcile_summary or {}
        counts = ", ".join(f"{k} {summary[k]}" for k in COUNTS if k in summary)
        reconciled = f"{t.reconciled_at.isoformat(timespec='seconds')} ({counts})"
    return (
        f"{t.target}: feed position {t.feed_after}, first sync"
        f" {'done' if t.initial_done else 'not done'}, last reconciliation {reconciled}"
    )


def _failure(f: Any) -> str:
    what = (
        f"given up: {f.given_up_reason}"
        if f.state == "given_up"
        else f"next try {f.next_try_at.isoformat(timespec='seconds')}"
    )
    return (
        f"  {f.target} {f.action} member {f.member or '(erased)'}: HTTP {f.last_status}"
        f" {f.last_title or ''} after {f.attempts} attempt(s); {what}"
    )


async def webhook(settings: Settings) -> str:
    api = MailchimpApi(settings)
    try:
        return await setup_webhook(api, settings)
    finally:
        await api.aclose()
