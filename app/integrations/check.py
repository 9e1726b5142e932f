"""`consent-api sync mailchimp|surveymonkey --check`: the credentials and the list tried
once (no retries, nothing written anywhere), and one line for the operator: what was found,
or what is wrong and which setting to look at. Never the key or an address."""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.config import Settings
from app.integrations.http import Answer, PoliteClient, RemoteRefused, RemoteUnavailable


class CheckFailed(Exception):
    """What is wrong, in one line."""


@dataclass(frozen=True)
class Target:
    label: str
    credential: str  # the setting that holds the key or token
    list_setting: str
    where: str  # the settings that say where the API is


MAILCHIMP = Target(
    "MailChimp",
    "CONSENT_MAILCHIMP_API_KEY",
    "CONSENT_MAILCHIMP_LIST_ID",
    "the -<dc> ending of CONSENT_MAILCHIMP_API_KEY or CONSENT_MAILCHIMP_BASE_URL",
)
SURVEYMONKEY = Target(
    "SurveyMonkey",
    "CONSENT_SURVEYMONKEY_ACCESS_TOKEN",
    "CONSENT_SURVEYMONKEY_CONTACT_LIST_ID",
    "CONSENT_SURVEYMONKEY_BASE_URL",
)


def _once(settings: Settings) -> Settings:
    """A check is one try: a retry with backoff would only delay the answer."""
    return settings.model_copy(update={"sync_max_attempts": 1})


def _unavailable(target: Target, exc: RemoteUnavailable, url: str) -> CheckFailed:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, httpx.Response):
        return CheckFailed(f"{target.label} answered HTTP {response.status_code}; try again later")
    host = urlsplit(url).netloc or url
    return CheckFailed(
        f"cannot reach {host} ({type(cause).__name__}): check {target.where} and the network"
    )


def _refused(target: Target, exc: RemoteRefused) -> CheckFailed:
    return CheckFailed(
        f"{target.label} refused the credentials (HTTP {exc.status}): check {target.credential}"
    )


def _answer(target: Target, what: str, answer: Answer, list_id: str | None = None) -> Any:
    """The body of a successful answer; otherwise the one line that explains the status."""
    if answer.ok:
        return answer.body if isinstance(answer.body, dict) else {}
    if answer.status == 404 and list_id is not None:
        raise CheckFailed(
            f"{target.label} has no list `{list_id}` for these credentials (HTTP 404):"
            f" check {target.list_setting}"
        )
    raise CheckFailed(f"{what} answered HTTP {answer.status}: check {target.where}")


async def _run(target: Target, url: str, steps: Any) -> str:
    try:
        return str(await steps())
    except RemoteRefused as exc:
        raise _refused(target, exc) from exc
    except RemoteUnavailable as exc:
        raise _unavailable(target, exc, url) from exc


async def check_mailchimp(settings: Settings) -> str:
    """GET /ping (the key and its data centre), then GET /lists/{id}."""
    from app.integrations.mailchimp import MailchimpApi, base_url

    api = MailchimpApi(_once(settings))
    list_id = str(settings.mailchimp_list_id)

    async def steps() -> str:
        _answer(MAILCHIMP, "GET /ping", await api.ping())
        found = _answer(MAILCHIMP, f"GET /lists/{list_id}", await api.list_info(), list_id)
        members = (found.get("stats") or {}).get("member_count", 0)
        return f"ok: list {found.get('name', list_id)}, {members:,} members"

    try:
        return await _run(MAILCHIMP, base_url(settings), steps)
    finally:
        await api.aclose()


async def check_surveymonkey(settings: Settings) -> str:
    """GET /users/me (the token), GET /contact_lists/{id}, and its active contacts' total."""
    assert settings.surveymonkey_access_token is not None
    url = settings.surveymonkey_base_url
    token = settings.surveymonkey_access_token.get_secret_value()
    http = PoliteClient(url, headers={"Authorization": f"Bearer {token}"}, max_attempts=1)
    list_id = str(settings.surveymonkey_contact_list_id)
    path = f"/contact_lists/{list_id}"

    async def steps() -> str:
        _answer(SURVEYMONKEY, "GET /users/me", await http.call("GET", "/users/me"))
        found = _answer(SURVEYMONKEY, f"GET {path}", await http.call("GET", path), list_id)
        contacts = await http.call("GET", f"{path}/contacts", params={"per_page": 1})
        total = _answer(SURVEYMONKEY, f"GET {path}/contacts", contacts).get("total", 0)
        return f"ok: contact list {found.get('name', list_id)}, {total:,} contacts"

    try:
        return await _run(SURVEYMONKEY, url, steps)
    finally:
        await http.aclose()


async def check(target: str, settings: Settings) -> str:
    """The line to print when all is well; CheckFailed with what is wrong otherwise."""
    if target == "mailchimp":
        return await check_mailchimp(settings)
    return await check_surveymonkey(settings)
