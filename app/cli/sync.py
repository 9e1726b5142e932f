"""`consent-api sync mailchimp|surveymonkey`: sync a marketing tool with the gate (issue 10)."""

import argparse
import asyncio
import json
import sys

from app.cli.common import database_url, migrate
from app.core.config import current_settings


def _sync(args: argparse.Namespace) -> None:
    """Sync with MailChimp or SurveyMonkey (issue 10)."""
    from app.core.observability import configure_logging
    from app.integrations.worker import SyncFailed, check_settings, run

    settings = current_settings()
    try:
        check_settings(args.target, settings)
    except SyncFailed as exc:
        raise SystemExit(f"consent-api sync: {exc}") from None
    configure_logging(settings.log_level)
    url = database_url(settings)
    migrate(url)
    try:
        summary = asyncio.run(
            run(args.target, settings, url, once=args.once, audience=args.audience)
        )
    except SyncFailed as exc:
        raise SystemExit(f"consent-api sync: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(
            "consent-api sync: stopped; the next run resumes where this one was"
        ) from None
    print(json.dumps(summary), file=sys.stderr)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sync = sub.add_parser("sync", help="sync MailChimp or SurveyMonkey with the gate")
    sync.add_argument("target", choices=("mailchimp", "surveymonkey"))
    sync.add_argument("--once", action="store_true", help="one pass, then exit")
    sync.add_argument("--audience", metavar="PURPOSE", help="the purpose whose audience to sync")
    sync.set_defaults(func=_sync)
