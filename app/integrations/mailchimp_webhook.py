"""The list's webhook in MailChimp, created or corrected through the API
(`consent-api sync mailchimp --setup-webhook`).

Its sources are the subscriber and an account admin, never the API: the worker's own calls
(an unsubscribe after a contract ended, say) then never come back as events, and every
unsubscribe that arrives is the person's own opt-out. Its events are those the service
acts on: unsubscribe, cleaned, upemail."""

from typing import Any
from urllib.parse import quote, urlsplit

from app.core.config import Settings
from app.integrations.mailchimp import MailchimpApi, NotConfigured

PATH = "/v1/webhooks/mailchimp"
EVENTS = {
    "subscribe": False,
    "unsubscribe": True,
    "profile": False,
    "cleaned": True,
    "upemail": True,
    "campaign": False,
}
SOURCES = {"user": True, "admin": True, "api": False}


def webhook_url(settings: Settings) -> str:
    secret = settings.mailchimp_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise NotConfigured("set CONSENT_MAILCHIMP_WEBHOOK_SECRET to set up the webhook")
    base = settings.public_base_url.rstrip("/")
    return f"{base}{PATH}?secret={quote(secret.get_secret_value(), safe='')}"


def _ours(hook: dict[str, Any], url: str) -> bool:
    """A webhook pointing at this service's endpoint, whatever secret it carries."""
    theirs, mine = urlsplit(str(hook.get("url") or "")), urlsplit(url)
    return (theirs.netloc, theirs.path) == (mine.netloc, mine.path)


def _right(hook: dict[str, Any], url: str) -> bool:
    events, sources = hook.get("events") or {}, hook.get("sources") or {}
    return (
        hook.get("url") == url
        and all(bool(events.get(k)) == v for k, v in EVENTS.items())
        and all(bool(sources.get(k)) == v for k, v in SOURCES.items())
    )


async def setup_webhook(api: MailchimpApi, settings: Settings) -> str:
    """Create the webhook, or correct every one of ours; one line saying which."""
    url = webhook_url(settings)
    path = f"/lists/{api.list_id}/webhooks"
    listed = await api.http.call("GET", path)
    if not listed.ok:
        raise RuntimeError(f"MailChimp refused to list webhooks: HTTP {listed.status}")
    ours = [h for h in listed.body.get("webhooks", []) if _ours(h, url)]
    body = {"url": url, "events": EVENTS, "sources": SOURCES}
    if not ours:
        created = await api.http.call("POST", path, json=body)
        if not created.ok:
            raise RuntimeError(f"MailChimp refused the webhook: HTTP {created.status}")
        return "webhook created (sources: user, admin; not api)"
    wrong = [h for h in ours if not _right(h, url)]
    for hook in wrong:
        answer = await api.http.call("PATCH", f"{path}/{hook['id']}", json=body)
        if not answer.ok:
            raise RuntimeError(f"MailChimp refused to correct the webhook: HTTP {answer.status}")
    return f"webhook corrected ({len(wrong)})" if wrong else "webhook already right"
