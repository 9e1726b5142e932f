"""`consent-api report-link` and `consent-api page-sessions list|revoke`: the auditor pages'
signed links, and the sessions they and the login form opened."""

import argparse
import asyncio
import json
from typing import Any

from app.cli.common import CliError, database_url, in_transaction, migrate
from app.core.config import Settings, current_settings

PAGE_SESSIONS_HELP = """\
The auditor pages' sessions, recorded server-side (only hashes of their tokens). A session
ends at logout, at its expiry, after {idle} idle minutes, or when revoked here; one opened with
an API key also ends when the key is revoked (`keys revoke`). A session opened from a
`report-link` link remembers the link: revoking the session (by id or --all) ends every
session that link opened and refuses the link from then on. `revoke --link <link>` does the
same by the link itself, and refuses a link nobody has opened yet too. A link nobody opened
is not known to the service before that: `revoke --all` cannot reach it, `--link` can."""


def _report_link(args: argparse.Namespace) -> None:
    from app.web.session import issue_link_token

    settings = current_settings()
    token = issue_link_token(settings, role=args.role, minutes=args.minutes)
    print(f"Valid for {args.minutes} minutes, for anyone who has it (revoke it with")
    print("`consent-api page-sessions revoke --link <link>`):")
    base = args.base_url or settings.public_base_url  # where the service is reached
    print(f"{base.rstrip('/')}/auditor/link/{token}")


async def _revoke_by_link(session: Any, settings: Settings, link: str) -> list[Any]:
    from datetime import UTC, datetime

    from app.services.access import page_sessions
    from app.web.session import verify

    token = link.strip().rstrip("/").rsplit("/", 1)[-1]
    payload = verify(settings, token, "link")
    if payload is None:
        raise CliError("not a valid report link of this service, or expired (it opens nothing)")
    revoked = await page_sessions.revoke_link(
        session,
        link_token=token,
        role=payload["role"],
        name=str(payload["name"]),
        expires=datetime.fromtimestamp(payload["exp"], UTC),
    )
    if not revoked:
        raise CliError("that link is revoked already")
    return revoked


async def _revoke_by_id(session: Any, session_id: str | None) -> list[Any]:
    import uuid

    from app.services.access import page_sessions

    try:
        wanted = uuid.UUID(str(session_id))
    except ValueError as exc:
        raise CliError(f"`{session_id}` is not a session id (see `page-sessions list`)") from exc
    revoked = await page_sessions.revoke(session, session_id=wanted)
    if not revoked:
        raise CliError(f"no session `{session_id}` to revoke (unknown, or revoked already)")
    return revoked


async def _page_sessions_revoke(
    session: Any, *, settings: Settings, session_id: str | None, every: bool, link: str | None
) -> list[Any]:
    """`page-sessions revoke`: the ids of the sessions ended (and links refused)."""
    from app.services.access import page_sessions

    if every:
        return await page_sessions.revoke_all(session)
    if link is not None:
        return await _revoke_by_link(session, settings, link)
    return await _revoke_by_id(session, session_id)


def _page_sessions(args: argparse.Namespace) -> None:
    from app.services.access import page_sessions

    settings = current_settings()
    url = database_url(settings)
    migrate(url)
    if args.page_sessions_command == "list":
        listed = in_transaction(url, settings, page_sessions.list_sessions, ended=args.all)
        for row in asyncio.run(listed):
            print(json.dumps(row, default=str))
        return
    revoked = asyncio.run(
        in_transaction(
            url,
            settings,
            _page_sessions_revoke,
            settings=settings,
            session_id=args.id,
            every=args.all,
            link=args.link,
        )
    )
    if args.link is not None:
        print("Revoked the link: refused from now on, and every session it opened ended.")
    else:
        print(f"Revoked {len(revoked)} session{'s' * (len(revoked) != 1)}.")


def _add_report_link(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    link = sub.add_parser(
        "report-link",
        help="print a short-lived signed link to the overview",
        description="Print a signed link to the auditor's overview, valid for --minutes, for "
        "anyone who has it. Revoke it, and end the sessions it opened, with "
        "`consent-api page-sessions revoke --link <link>` (or by session id, or --all).",
    )
    link.add_argument(
        "--role",
        choices=("auditor", "admin"),
        default="auditor",
        help="whose view the link opens (default: %(default)s)",
    )
    link.add_argument(
        "--minutes",
        type=int,
        default=15,
        choices=range(1, 1441),
        metavar="1-1440",
        help="how long the link stays valid (default: %(default)s)",
    )
    link.add_argument(
        "--base-url",
        default=None,
        help="where the service is reached, as the link's start"
        " (default: CONSENT_PUBLIC_BASE_URL, or http://127.0.0.1:8000)",
    )
    link.set_defaults(func=_report_link)


def _add_page_sessions(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.services.access.page_sessions import IDLE_MINUTES

    page_help = PAGE_SESSIONS_HELP.format(idle=IDLE_MINUTES)
    raw = argparse.RawDescriptionHelpFormatter
    page = sub.add_parser(
        "page-sessions",
        help="list or revoke the auditor pages' sessions (and report links)",
        description=page_help,
        formatter_class=raw,
    )
    page_sub = page.add_subparsers(dest="page_sessions_command", required=True)
    listed = page_sub.add_parser("list", help="live sessions, newest first (never a token)")
    listed.add_argument("--all", action="store_true", help="also those ended or expired")
    revoke = page_sub.add_parser(
        "revoke",
        help="end sessions; a link's session: refuse the link too",
        description=page_help,
        formatter_class=raw,
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="a session id from `page-sessions list`")
    which.add_argument("--all", action="store_true", help="every session (and their links)")
    which.add_argument("--link", metavar="LINK", help="a report link (the URL or its token)")
    page.set_defaults(func=_page_sessions)


async def _console_link_token(session: Any, *, settings: Settings, name: str, minutes: int) -> str:
    from app.services.access import api_keys
    from app.web.session import CONSOLE_ROLES, issue_console_link

    row = await api_keys.find_live_key_by_name(session, name)
    if row is None:
        raise CliError(f"no unrevoked key named `{name}` (see `consent-api keys list`)")
    if row.role not in CONSOLE_ROLES:
        raise CliError(f"a `{row.role}` key does not open the console (crm, admin or auditor)")
    return issue_console_link(
        settings, role=row.role, name=row.name, key_id=row.id, minutes=minutes
    )


def _console_link(args: argparse.Namespace) -> None:
    settings = current_settings()
    url = database_url(settings)
    migrate(url)
    token = asyncio.run(
        in_transaction(
            url, settings, _console_link_token, settings=settings, name=args.key,
            minutes=args.minutes,
        )
    )  # fmt: skip
    print(f"Valid for {args.minutes} minutes, for anyone who has it; it acts as the key")
    print(f"`{args.key}` (revoking the key ends its sessions and refuses the link):")
    base = args.base_url or settings.public_base_url
    print(f"{base.rstrip('/')}/console/link/{token}")


def _add_console_link(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    link = sub.add_parser(
        "console-link",
        help="print a short-lived signed link to the privacy console, for an API key",
        description="Print a signed link that opens the privacy console as the API key "
        "named (crm, admin, or auditor to read only), valid for --minutes. `keys revoke "
        "NAME` ends every session it opened and refuses it; so does `page-sessions revoke` "
        "of one of its sessions.",
    )
    link.add_argument("--key", required=True, metavar="NAME", help="the API key's name")
    link.add_argument(
        "--minutes",
        type=int,
        default=15,
        choices=range(1, 1441),
        metavar="1-1440",
        help="how long the link stays valid (default: %(default)s)",
    )
    link.add_argument(
        "--base-url",
        default=None,
        help="where the service is reached (default: CONSENT_PUBLIC_BASE_URL)",
    )
    link.set_defaults(func=_console_link)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _add_report_link(sub)
    _add_console_link(sub)
    _add_page_sessions(sub)
