"""MailChimp Marketing API v3: the calls the sync worker makes, and nothing else.

Members are keyed by the subscriber hash, the MD5 of the lower-cased address. Every call
is idempotent: the batch upsert (`update_existing`), PUT with `status_if_new`, PATCH to a
status, delete-permanent (a second one is a 404, taken as done)."""

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx

from app.core.config import Settings
from app.integrations.http import Answer, PoliteClient
from app.models.audience import AudienceMember

BATCH_LIMIT = 500  # MailChimp's limit per batch subscribe call
READ_PAGE = 1000  # MailChimp's largest `count`
READBACK_OVERLAP = timedelta(minutes=5)


class NotConfigured(Exception):
    pass


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def base_url(settings: Settings) -> str:
    if settings.mailchimp_base_url:
        return settings.mailchimp_base_url
    key = settings.mailchimp_api_key.get_secret_value() if settings.mailchimp_api_key else ""
    dc = key.rpartition("-")[2]
    if not dc or dc == key:
        raise NotConfigured(
            "set CONSENT_MAILCHIMP_API_KEY (ending in -<dc>, e.g. -us21) or"
            " CONSENT_MAILCHIMP_BASE_URL"
        )
    return f"https://{dc}.api.mailchimp.com/3.0"


class MailchimpApi:
    def __init__(self, settings: Settings, **client_kw: Any) -> None:
        if not settings.mailchimp_api_key or not settings.mailchimp_list_id:
            raise NotConfigured(
                "set CONSENT_MAILCHIMP_API_KEY and CONSENT_MAILCHIMP_LIST_ID to sync MailChimp"
            )
        self.list_id = settings.mailchimp_list_id
        self.company_field = settings.mailchimp_company_field
        self.http = PoliteClient(
            base_url(settings),
            # MailChimp takes the key as the password of HTTP Basic auth, any user name.
            auth=httpx.BasicAuth("consent-api", settings.mailchimp_api_key.get_secret_value()),
            max_connections=settings.sync_max_connections,
            max_attempts=settings.sync_max_attempts,
            backoff=settings.sync_backoff_seconds,
            **client_kw,
        )

    def merge_fields(self, member: AudienceMember) -> dict[str, str]:
        first, _, last = (member.name or "").partition(" ")
        fields = {"FNAME": first, "LNAME": last}
        if self.company_field:
            fields[self.company_field] = member.company or ""
        return fields

    async def ping(self) -> Answer:
        """GET /ping: whether the key and its data centre are accepted."""
        return await self.http.call("GET", "/ping")

    async def list_info(self) -> Answer:
        """GET /lists/{id}: the list's name and member count (`stats.member_count`)."""
        fields = "id,name,stats.member_count"
        return await self.http.call("GET", f"/lists/{self.list_id}", params={"fields": fields})

    async def batch_subscribe(self, members: list[AudienceMember]) -> Answer:
        body = {
            "members": [
                {
                    "email_address": m.email,
                    "status": "subscribed",
                    "merge_fields": self.merge_fields(m),
                }
                for m in members
            ],
            "update_existing": True,
        }
        return await self.http.call("POST", f"/lists/{self.list_id}", json=body)

    async def upsert(self, member: AudienceMember, *, resubscribe: bool = False) -> Answer:
        """`resubscribe` (reconciliation only, for a member our own unsubscribe or an
        archive took off): subscribed again. MailChimp itself refuses it for a member who
        unsubscribed by their own action (`Member In Compliance State`)."""
        assert member.email is not None
        body = {
            "email_address": member.email,
            # A member who unsubscribed in MailChimp stays unsubscribed: only new ones
            # are subscribed, and only because the gate allows them now.
            "status_if_new": "subscribed",
            "merge_fields": self.merge_fields(member),
        }
        if resubscribe:
            body["status"] = "subscribed"
        path = f"/lists/{self.list_id}/members/{subscriber_hash(member.email)}"
        return await self.http.call("PUT", path, json=body)

    async def change_address(self, old_hash: str, member: AudienceMember) -> Answer:
        body = {"email_address": member.email, "merge_fields": self.merge_fields(member)}
        return await self.http.call("PATCH", f"/lists/{self.list_id}/members/{old_hash}", json=body)

    async def unsubscribe(self, member_hash: str) -> Answer:
        return await self.http.call(
            "PATCH",
            f"/lists/{self.list_id}/members/{member_hash}",
            json={"status": "unsubscribed"},
        )

    async def delete_permanent(self, member_hash: str) -> Answer:
        return await self.http.call(
            "POST", f"/lists/{self.list_id}/members/{member_hash}/actions/delete-permanent"
        )

    async def members_changed(
        self, status: str, since: datetime | None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Members with `status`, changed since `since` (with a few minutes' overlap)."""
        params: dict[str, Any] = {"status": status}
        if since is not None:
            params["since_last_changed"] = (since - READBACK_OVERLAP).isoformat()
        async for page in self._pages(params, what=f"{status} members"):
            yield page

    async def all_members(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The whole list, a page of 1,000 at a time (reconciliation)."""
        async for page in self._pages({}, what="the list's members"):
            yield page

    async def _pages(
        self, params: dict[str, Any], *, what: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        offset = 0
        while True:
            query = {
                **params,
                "count": READ_PAGE,
                "offset": offset,
                "fields": "members.email_address,members.status,members.last_changed,total_items",
            }
            answer = await self.http.call("GET", f"/lists/{self.list_id}/members", params=query)
            if not answer.ok:
                raise RuntimeError(f"reading {what} failed with HTTP {answer.status}")
            page = answer.body.get("members", [])
            if page:
                yield page
            if len(page) < READ_PAGE:
                return
            offset += READ_PAGE

    async def aclose(self) -> None:
        await self.http.aclose()
