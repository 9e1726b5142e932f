"""`consent-api sync mailchimp|surveymonkey`: build the worker for a target and run it once
(`--once`) or until stopped. One line on stderr says what to fix when it cannot work."""

import logging
import time
from typing import Any

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import ProblemError
from app.integrations.http import RemoteRefused, RemoteUnavailable
from app.integrations.mailchimp import NotConfigured
from app.integrations.progress import Progress
from app.integrations.runner import database_unavailable

log = logging.getLogger("consent_api.sync")


class SyncFailed(Exception):
    """What the operator reads: one line, no address, no stack trace."""


def check_settings(target: str, settings: Settings) -> None:
    """Refuse before anything starts when the target's settings are missing."""
    if target == "mailchimp":
        from app.integrations.mailchimp import base_url

        if not settings.mailchimp_api_key or not settings.mailchimp_list_id:
            raise SyncFailed(
                "set CONSENT_MAILCHIMP_API_KEY and CONSENT_MAILCHIMP_LIST_ID to sync MailChimp"
            )
        try:
            base_url(settings)
        except NotConfigured as exc:
            raise SyncFailed(str(exc)) from exc
    elif not settings.surveymonkey_access_token or not settings.surveymonkey_contact_list_id:
        raise SyncFailed(
            "set CONSENT_SURVEYMONKEY_ACCESS_TOKEN and CONSENT_SURVEYMONKEY_CONTACT_LIST_ID"
            " to sync SurveyMonkey"
        )


def build(
    target: str, settings: Settings, maker: Any, *, audience: str | None = None, **kw: Any
) -> Any:
    if target == "mailchimp":
        from app.integrations.mailchimp_sync import MailchimpSync

        return MailchimpSync(settings, maker, purpose=audience, **kw)
    from app.integrations.surveymonkey_sync import SurveymonkeySync

    return SurveymonkeySync(settings, maker, purpose=audience, **kw)


async def run(
    target: str,
    settings: Settings,
    database_url: str,
    *,
    once: bool,
    audience: str | None = None,
    progress: Progress | None = None,
    reconcile: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """One pass (`once`), passes until stopped, or one reconciliation (`reconcile`: its
    options `dry_run`, `unknown`), its counts returned under `reconciled`."""
    engine = create_engine(database_url, settings)
    started = time.perf_counter()
    worker = None
    reconciled: dict[str, Any] | None = None
    try:
        worker = build(
            target,
            settings,
            create_sessionmaker(engine),
            audience=audience,
            progress=progress,
            **kw,
        )
        reconciled = await _drive(worker, once=once, reconcile=reconcile)
    except Exception as exc:
        failed = failure(target, exc)
        if failed is None:
            raise
        raise failed from exc
    finally:
        if worker is not None:
            await worker.aclose()
        await engine.dispose()
    seconds = time.perf_counter() - started
    summary = {"target": target, "pushed": getattr(worker, "pushed", 0), "seconds": seconds}
    return summary if reconciled is None else {**summary, "reconciled": reconciled}


async def _drive(
    worker: Any, *, once: bool, reconcile: dict[str, Any] | None
) -> dict[str, Any] | None:
    if reconcile is not None:
        result: dict[str, Any] = await worker.reconcile(**reconcile)
        return result
    if once:
        await worker.run_once()
    else:
        await worker.run_forever()
    return None


def failure(target: str, exc: Exception) -> SyncFailed | None:
    """The one line the operator reads for a failure we can explain; None for any other
    (it propagates as it is)."""
    if isinstance(exc, BaseExceptionGroup):  # concurrent calls: the first one explains it
        inner = [failure(target, e) if isinstance(e, Exception) else None for e in exc.exceptions]
        return inner[0] if all(inner) else None
    if isinstance(exc, NotConfigured):
        return SyncFailed(str(exc))
    if isinstance(exc, RemoteRefused):
        return SyncFailed(f"{target} {exc}: check the API key or access token")
    if isinstance(exc, RemoteUnavailable):
        return SyncFailed(f"{target} is unavailable ({exc}); run again later, nothing is lost")
    if isinstance(exc, ProblemError):
        return SyncFailed(exc.detail or exc.title)
    if not database_unavailable(exc):
        return None
    return SyncFailed(
        "the database is unavailable; run again later, the sync resumes where it stopped"
    )
