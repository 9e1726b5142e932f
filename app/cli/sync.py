"""`consent-api sync mailchimp|surveymonkey|status`: sync a marketing tool with the gate."""

import argparse
import asyncio
import json
import sys
from typing import Any

from app.cli.common import database_url, migrate
from app.core.config import current_settings


def _status() -> None:
    from app.integrations.status import status_lines

    settings = current_settings()
    url = database_url(settings)
    migrate(url)
    print("\n".join(asyncio.run(status_lines(settings, url))))


def _setup_webhook() -> None:
    from app.integrations.status import webhook
    from app.integrations.worker import SyncFailed, check_settings, failure

    settings = current_settings()
    try:
        check_settings("mailchimp", settings)
        print(asyncio.run(webhook(settings)))
    except SyncFailed as exc:
        raise SystemExit(f"consent-api sync: {exc}") from None
    except Exception as exc:
        failed = failure("mailchimp", exc)
        if failed is None:
            raise
        raise SystemExit(f"consent-api sync: {failed}") from None


def _sync(args: argparse.Namespace) -> None:
    """Sync with MailChimp or SurveyMonkey; `status` shows positions and what waits."""
    from app.core.observability import configure_logging
    from app.integrations.worker import SyncFailed, check_settings, run

    if args.target == "status":
        return _status()
    if args.setup_webhook:
        if args.target != "mailchimp":
            raise SystemExit("consent-api sync: --setup-webhook is for mailchimp")
        return _setup_webhook()
    options = _options(args)
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
            run(args.target, settings, url, once=args.once, audience=args.audience, **options)
        )
    except SyncFailed as exc:
        raise SystemExit(f"consent-api sync: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(
            "consent-api sync: stopped; the next run resumes where this one was"
        ) from None
    if "reconciled" in summary:
        from app.integrations.reconcile import describe

        print(describe(summary["reconciled"]))
    print(json.dumps(summary), file=sys.stderr)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """`--reconcile` and its options, checked."""
    if not args.reconcile:
        if args.dry_run or args.unknown:
            raise SystemExit("consent-api sync: --dry-run and --unknown go with --reconcile")
        return {}
    return {"reconcile": {"dry_run": args.dry_run, "unknown": args.unknown or "report"}}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sync = sub.add_parser("sync", help="sync MailChimp or SurveyMonkey with the gate")
    sync.add_argument("target", choices=("mailchimp", "surveymonkey", "status"))
    sync.add_argument("--once", action="store_true", help="one pass, then exit")
    sync.add_argument(
        "--setup-webhook",
        action="store_true",
        help="create or correct the list's MailChimp webhook (sources user and admin, not api)",
    )
    sync.add_argument("--audience", metavar="PURPOSE", help="the purpose whose audience to sync")
    sync.add_argument(
        "--reconcile",
        action="store_true",
        help="read the whole list and make it equal to the gate's audience (audited); a"
        " member who unsubscribed themselves is recorded as an opt-out, never subscribed again",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="with --reconcile: print what would change, change nothing",
    )
    sync.add_argument(
        "--unknown",
        choices=("report", "unsubscribe"),
        help="with --reconcile: list members unknown to the service are reported and left"
        " alone (report, the default) or unsubscribed; MailChimp only (SurveyMonkey deletes"
        " them, as the gate denies them)",
    )
    sync.set_defaults(func=_sync)
