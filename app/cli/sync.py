"""`consent-api sync mailchimp|surveymonkey|status`: sync a marketing tool with the gate."""

import argparse
import asyncio
import json
import sys
import textwrap
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


def _check(target: str) -> None:
    """`--check`: the credentials and the list, tried once; no database needed."""
    from app.integrations.check import CheckFailed, check
    from app.integrations.worker import SyncFailed, check_settings

    settings = current_settings()
    try:
        check_settings(target, settings)
        print(asyncio.run(check(target, settings)))
    except (SyncFailed, CheckFailed) as exc:
        raise SystemExit(f"consent-api sync: {target}: {exc}") from None


def _sync(args: argparse.Namespace) -> None:
    """Sync with MailChimp or SurveyMonkey; `status` shows positions and what waits."""
    from app.core.observability import configure_logging
    from app.integrations.worker import SyncFailed, check_settings, run

    if args.target == "status":
        return _status()
    if args.check:
        if args.once or args.reconcile or args.dry_run or args.setup_webhook:
            raise SystemExit("consent-api sync: --check goes alone")
        return _check(args.target)
    if args.setup_webhook:
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


# The settings each target reads (Settings' field names), shown in its --help.
MAILCHIMP_SETTINGS = {
    "mailchimp_api_key": "the API key; its -<dc> ending names the data centre (required)",
    "mailchimp_list_id": "the audience (list) id (required)",
    "mailchimp_base_url": "the API's URL instead of https://<dc>.api.mailchimp.com/3.0",
    "mailchimp_purpose": "the purpose whose audience the list holds",
    "mailchimp_recipient": "the recipient the gate checks the audience for",
    "mailchimp_company_field": "a merge field for the company, if the list has one",
    "mailchimp_webhook_secret": "the secret the list's webhook carries (--setup-webhook)",
    "public_base_url": "where the webhook points (--setup-webhook)",
}
SURVEYMONKEY_SETTINGS = {
    "surveymonkey_access_token": "the API access token (required)",
    "surveymonkey_contact_list_id": "the contact list kept to the gate's audience (required)",
    "surveymonkey_base_url": "the API's URL",
    "surveymonkey_purpose": "the purpose whose audience the list holds",
    "surveymonkey_recipient": "the recipient the gate checks the audience for",
}
WORKER_SETTINGS = {
    "sync_batch_size": "change-feed entries per batch (MailChimp: members per batch call)",
    "sync_max_connections": "simultaneous connections to the tool",
    "sync_max_attempts": "tries per call (429, 5xx, dropped connections)",
    "sync_backoff_seconds": "the first wait between tries; doubles, with jitter",
    "sync_poll_seconds": "between passes, without --once",
    "sync_reconcile_hours": "a following worker reconciles when the last is older; 0: never",
    "database_url": "the database (unset: the embedded one in CONSENT_DATA_DIR)",
}


def settings_epilog(own: dict[str, str]) -> str:
    """The settings a target reads, as CONSENT_* names with their defaults."""
    from app.core.config import Settings

    lines = ["settings (environment variables):"]
    for name, what in {**own, **WORKER_SETTINGS}.items():
        default = Settings.model_fields[name].default
        shown = f" (default: {default})" if default not in (None, "") else ""
        lines.append(f"  CONSENT_{name.upper()}")
        lines += textwrap.wrap(what + shown, 76, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def _para(text: str) -> str:
    """A description wrapped as argparse would, for parsers whose epilog keeps its lines."""
    return textwrap.fill(text, 78)


def _common(parser: argparse.ArgumentParser, *, reconcile_help: str) -> None:
    """The options every tool's worker takes."""
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--audience", metavar="PURPOSE", help="the purpose whose audience to sync")
    parser.add_argument("--reconcile", action="store_true", help=reconcile_help)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --reconcile: print what would change, change nothing",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="try the credentials and the list once, print what is wrong or `ok: ...`,"
        " change nothing (exit 0 or 1)",
    )


def _add_mailchimp(targets: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    mailchimp = targets.add_parser(
        "mailchimp",
        help="keep a MailChimp list equal to the gate's audience",
        description=_para(
            "Keep a MailChimp list (audience) equal to the gate's audience for"
            " CONSENT_MAILCHIMP_PURPOSE: follows the change feed, subscribes whom the gate"
            " allows, unsubscribes whom it denies, deletes erased subjects' members."
        ),
        epilog=settings_epilog(MAILCHIMP_SETTINGS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(
        mailchimp,
        reconcile_help="read the whole list and make it equal to the gate's audience"
        " (audited); a member who unsubscribed themselves is recorded as an opt-out, never"
        " subscribed again",
    )
    mailchimp.add_argument(
        "--setup-webhook",
        action="store_true",
        help="create or correct the list's MailChimp webhook (sources user and admin, not api)",
    )
    mailchimp.add_argument(
        "--unknown",
        choices=("report", "unsubscribe"),
        help="with --reconcile: list members unknown to the service are reported and left"
        " alone (report, the default) or unsubscribed",
    )
    mailchimp.set_defaults(func=_sync)


def _add_surveymonkey(targets: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    surveymonkey = targets.add_parser(
        "surveymonkey",
        help="keep a SurveyMonkey contact list to the gate's audience",
        description=_para(
            "Keep a SurveyMonkey contact list to the gate's audience for"
            " CONSENT_SURVEYMONKEY_PURPOSE: records its opt-outs as the person's no, removes"
            " the contacts the gate denies and erased subjects' contacts; never adds any."
        ),
        epilog=settings_epilog(SURVEYMONKEY_SETTINGS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(
        surveymonkey,
        reconcile_help="judge the whole contact list and report it as MailChimp's"
        " reconciliation does; an address unknown to the service is deleted (the gate"
        " denies it)",
    )
    # Options of MailChimp's only, so that one parse serves both.
    surveymonkey.set_defaults(func=_sync, setup_webhook=False, unknown=None)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sync = sub.add_parser(
        "sync",
        help="sync MailChimp or SurveyMonkey with the gate",
        description="Sync a marketing tool with the gate. `consent-api sync TARGET --help`"
        " names the settings each target reads.",
    )
    targets = sync.add_subparsers(dest="target", required=True, metavar="TARGET")
    _add_mailchimp(targets)
    _add_surveymonkey(targets)
    targets.add_parser(
        "status", help="positions, waiting failures and the last reconciliation per target"
    ).set_defaults(func=_sync)
