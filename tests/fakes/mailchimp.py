"""A fake of the MailChimp Marketing API v3 (the endpoints the sync worker calls).

Shapes follow MailChimp's reference: HTTP Basic auth with the API key as password; errors
as `application/problem+json` {type, title, status, detail, instance}; the batch subscribe
answer {new_members, updated_members, errors, total_created, total_updated, error_count};
members keyed by the MD5 of the lower-cased address; a member who unsubscribed or was
cleaned cannot be subscribed again through the API (compliance state); a permanently
deleted address cannot be re-imported."""

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.faults import FaultMiddleware, Faults

ERRORS_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"
WEBHOOK_EVENTS = ("subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign")
STATUSES = {"subscribed", "unsubscribed", "cleaned", "pending", "transactional"}
# A list's `stats`: {member_count, unsubscribe_count, cleaned_count}, by member status.
STATS = {"member": "subscribed", "unsubscribe": "unsubscribed", "cleaned": "cleaned"}
TITLES = {
    400: "Invalid Resource",
    401: "API Key Invalid",
    404: "Resource Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
DETAILS = {
    401: "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
    404: "The requested resource could not be found.",
    429: "You have exceeded the limit of 10 simultaneous connections.",
    500: "An unexpected internal error has occurred. Please contact Support for more information.",
}


def md5(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def real_time() -> datetime:
    return datetime.now(UTC)


def problem(status: int, title: str | None = None, detail: str | None = None) -> tuple[str, bytes]:
    body = {
        "type": ERRORS_DOC,
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail or DETAILS.get(status, ""),
        "instance": str(uuid.uuid4()),
    }
    return "application/problem+json; charset=utf-8", orjson.dumps(body)


def error(status: int, title: str | None = None, detail: str | None = None) -> Response:
    content_type, body = problem(status, title, detail)
    return Response(body, status_code=status, media_type=content_type)


def ok(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _narrowed(body: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """MailChimp's `fields` parameter: only the dotted paths asked for."""
    out: dict[str, Any] = {}
    for path in paths:
        head, _, rest = path.strip().partition(".")
        if head not in body:
            continue
        if rest and isinstance(body[head], dict):
            out[head] = {**out.get(head, {}), **_narrowed(body[head], [rest])}
        else:
            out[head] = body[head]
    return out


class FakeMailchimp:
    def __init__(self, api_key: str = "fake-key-us99", list_ids: tuple[str, ...] = ("a1b2c3d4e5",)):
        self.api_key = api_key
        self.lists: dict[str, dict[str, dict[str, Any]]] = {lid: {} for lid in list_ids}
        self.names: dict[str, str] = {lid: f"Audience {lid}" for lid in list_ids}
        self.forgotten: dict[str, set[str]] = {lid: set() for lid in list_ids}
        self.webhooks: dict[str, dict[str, dict[str, Any]]] = {lid: {} for lid in list_ids}
        # Members whose unsubscribe came through the API (an admin's): MailChimp lets the API
        # subscribe them again; one who unsubscribed themselves is in a compliance state.
        self.api_unsubscribed: dict[str, set[str]] = {lid: set() for lid in list_ids}
        self.faults = Faults()
        # MailChimp's clock (`last_changed`): a test that moves the worker's clock moves it too.
        self.clock: Any = real_time
        routes = [
            Route("/3.0/ping", self.ping, methods=["GET"]),
            Route("/3.0/lists/{list_id}", self.batch, methods=["POST"]),
            Route("/3.0/lists/{list_id}", self.list_info, methods=["GET"]),
            Route("/3.0/lists/{list_id}/members", self.list_members, methods=["GET"]),
            Route(
                "/3.0/lists/{list_id}/members/{h}",
                self.member,
                methods=["GET", "PUT", "PATCH"],
            ),
            Route("/3.0/lists/{list_id}/webhooks", self.list_webhooks, methods=["GET", "POST"]),
            Route("/3.0/lists/{list_id}/webhooks/{wid}", self.webhook, methods=["GET", "PATCH"]),
            Route(
                "/3.0/lists/{list_id}/members/{h}/actions/delete-permanent",
                self.delete_permanent,
                methods=["POST"],
            ),
        ]
        inner = Starlette(routes=routes)
        self.app = FaultMiddleware(self._auth(inner), self.faults, problem)

    # --- test helpers ---
    def members(self, list_id: str) -> dict[str, dict[str, Any]]:
        return self.lists[list_id]

    def statuses(self, list_id: str) -> dict[str, str]:
        return {h: m["status"] for h, m in self.lists[list_id].items()}

    def add_by_hand(self, list_id: str, email: str, status: str = "subscribed") -> str:
        """Someone adds a member in MailChimp's web app: the member's hash."""
        member = self._new_member(list_id, email, status, {})
        self.lists[list_id][member["id"]] = member
        return str(member["id"])

    def now(self, ago: timedelta = timedelta(0)) -> str:
        return (self.clock() - ago).replace(microsecond=0).isoformat()

    def unsubscribe_by_member(
        self, list_id: str, email: str, ago: timedelta = timedelta(0)
    ) -> None:
        """The person clicks unsubscribe in a campaign, `ago` before now (no webhook
        reaches us)."""
        member = self.lists[list_id][md5(email)]
        member["status"], member["last_changed"] = "unsubscribed", self.now(ago)
        self.api_unsubscribed[list_id].discard(member["id"])

    def _auth(self, app: Any) -> Any:
        async def guarded(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                header = dict(scope["headers"]).get(b"authorization", b"").decode()
                scheme, _, value = header.partition(" ")
                password = ""
                if scheme.lower() == "basic":
                    try:
                        password = base64.b64decode(value).decode().partition(":")[2]
                    except ValueError:
                        password = ""
                if password != self.api_key:
                    await error(401)(scope, receive, send)
                    return
            await app(scope, receive, send)

        return guarded

    def _list(self, request: Request) -> dict[str, dict[str, Any]] | None:
        return self.lists.get(request.path_params["list_id"])

    async def _json(self, request: Request) -> Any:
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None

    def _new_member(self, list_id: str, email: str, status: str, merge: dict) -> dict[str, Any]:
        return {
            "id": md5(email),
            "email_address": email,
            "unique_email_id": uuid.uuid4().hex[:10],
            "status": status,
            "merge_fields": dict(merge or {}),
            "last_changed": self.now(),
            "list_id": list_id,
        }

    # --- endpoints ---
    async def ping(self, request: Request) -> Response:
        return ok({"health_status": "Everything's Chimpy!"})

    async def list_info(self, request: Request) -> Response:
        """GET /lists/{list_id}: the list with its `stats` (member_count: subscribed ones),
        narrowed by `fields` (dotted paths, comma-separated) as MailChimp narrows it."""
        list_id = request.path_params["list_id"]
        members = self.lists.get(list_id)
        if members is None:
            return error(404)
        count = {s: sum(m["status"] == s for m in members.values()) for s in STATUSES}
        stats = {f"{k}_count": count[s] for k, s in STATS.items()}
        body = {"id": list_id, "name": self.names[list_id], "stats": stats, "_links": []}
        wanted = request.query_params.get("fields")
        return ok(_narrowed(body, wanted.split(",")) if wanted else body)

    async def batch(self, request: Request) -> Response:
        """Batch subscribe or unsubscribe list members (up to 500)."""
        members = self._list(request)
        body = await self._json(request)
        if members is None:
            return error(404)
        if not isinstance(body, dict) or not isinstance(body.get("members"), list):
            return error(400, detail="The resource submitted could not be validated.")
        if len(body["members"]) > 500:
            return error(400, detail="Up to 500 members may be added or updated with each call.")
        list_id = request.path_params["list_id"]
        update = bool(body.get("update_existing"))
        new, updated, errors = [], [], []
        for item in body["members"]:
            email = str(item.get("email_address") or "").strip()
            status = item.get("status")
            if "@" not in email or status not in STATUSES:
                errors.append(
                    {
                        "email_address": email,
                        "error": "Invalid Resource",
                        "error_code": "ERROR_GENERIC",
                        "field": "",
                        "field_message": "",
                    }
                )
                continue
            h = md5(email)
            if h in self.forgotten[list_id]:
                errors.append(
                    {
                        "email_address": email,
                        "error": f"{email} was permanently deleted and cannot be re-imported.",
                        "error_code": "ERROR_CONTACT_EXISTS",
                        "field": "",
                        "field_message": "",
                    }
                )
                continue
            existing = members.get(h)
            if existing is None:
                members[h] = self._new_member(list_id, email, status, item.get("merge_fields"))
                new.append(members[h])
            elif not update:
                errors.append(
                    {
                        "email_address": email,
                        "error": f"{email} is already a list member",
                        "error_code": "ERROR_CONTACT_EXISTS",
                        "field": "",
                        "field_message": "",
                    }
                )
            elif status == "subscribed" and existing["status"] in ("unsubscribed", "cleaned"):
                errors.append(
                    {
                        "email_address": email,
                        "error": f"{email} is in a compliance state"
                        " due to unsubscribe, bounce, or compliance review and cannot be"
                        " subscribed.",
                        "error_code": "ERROR_GENERIC",
                        "field": "",
                        "field_message": "",
                    }
                )
            else:
                existing["merge_fields"].update(item.get("merge_fields") or {})
                if existing["status"] != status:
                    existing["status"], existing["last_changed"] = status, self.now()
                updated.append(existing)
        return ok(
            {
                "new_members": new,
                "updated_members": updated,
                "errors": errors,
                "total_created": len(new),
                "total_updated": len(updated),
                "error_count": len(errors),
                "_links": [],
            }
        )

    async def list_members(self, request: Request) -> Response:
        members = self._list(request)
        if members is None:
            return error(404)
        q = request.query_params
        chosen = list(members.values())
        if q.get("status"):
            chosen = [m for m in chosen if m["status"] == q["status"]]
        if q.get("since_last_changed"):
            since = datetime.fromisoformat(q["since_last_changed"])
            chosen = [m for m in chosen if datetime.fromisoformat(m["last_changed"]) >= since]
        count = min(int(q.get("count", 10)), 1000)
        offset = int(q.get("offset", 0))
        page = chosen[offset : offset + count]
        return ok(
            {"members": page, "list_id": request.path_params["list_id"], "total_items": len(chosen)}
        )

    async def member(self, request: Request) -> Response:
        members = self._list(request)
        h = request.path_params["h"]
        if members is None:
            return error(404)
        list_id = request.path_params["list_id"]
        existing = members.get(h)
        if request.method == "GET":
            return ok(existing) if existing else error(404)
        body = await self._json(request)
        if not isinstance(body, dict):
            return error(400, detail="The resource submitted could not be validated.")
        if request.method == "PUT":
            email = str(body.get("email_address") or "")
            if md5(email) != h:
                return error(400, detail="The subscriber hash does not match the address.")
            if existing is None:
                if h in self.forgotten[list_id]:
                    return error(
                        400,
                        "Forgotten Email Not Subscribed",
                        "This contact was permanently deleted and cannot be re-imported.",
                    )
                status = body.get("status_if_new") or body.get("status")
                if status not in STATUSES:
                    return error(400, detail="status_if_new is required for a new member.")
                members[h] = self._new_member(list_id, email, status, body.get("merge_fields"))
                return ok(members[h])
            existing = members[h]
        elif existing is None:  # PATCH
            return error(404)
        status = body.get("status")
        if status is not None:
            if status not in STATUSES:
                return error(400, detail="Invalid status.")
            by_api = h in self.api_unsubscribed[list_id]
            if status == "subscribed" and existing["status"] in ("unsubscribed", "cleaned"):
                if not (existing["status"] == "unsubscribed" and by_api):
                    return error(
                        400,
                        "Member In Compliance State",
                        "The contact is in a compliance state and cannot be subscribed.",
                    )
            if existing["status"] != status:
                existing["status"], existing["last_changed"] = status, self.now()
                self.api_unsubscribed[list_id].discard(h)
                if status == "unsubscribed":
                    self.api_unsubscribed[list_id].add(h)
        existing["merge_fields"].update(body.get("merge_fields") or {})
        new_email = body.get("email_address")
        if request.method == "PATCH" and new_email and md5(new_email) != h:
            if md5(new_email) in members:
                return error(400, "Member Exists", "The new address is already a list member.")
            del members[h]
            existing.update(id=md5(new_email), email_address=new_email, last_changed=self.now())
            members[existing["id"]] = existing
        return ok(existing)

    async def delete_permanent(self, request: Request) -> Response:
        members = self._list(request)
        h = request.path_params["h"]
        if members is None or h not in members:
            return error(404)
        del members[h]
        self.forgotten[request.path_params["list_id"]].add(h)
        return Response(status_code=204)

    # --- webhooks: {id, url, events{...}, sources{user, admin, api}, list_id} ---
    def _hook(self, list_id: str, wid: str, body: dict[str, Any], old: dict | None) -> dict:
        old = old or {"events": dict.fromkeys(WEBHOOK_EVENTS, False), "sources": {}}
        events = {**old["events"], **{k: bool(v) for k, v in (body.get("events") or {}).items()}}
        sources = {**dict.fromkeys(("user", "admin", "api"), False), **old["sources"]}
        sources.update({k: bool(v) for k, v in (body.get("sources") or {}).items()})
        return {
            "id": wid,
            "url": str(body.get("url") or old.get("url") or ""),
            "events": {k: events.get(k, False) for k in WEBHOOK_EVENTS},
            "sources": sources,
            "list_id": list_id,
            "_links": [],
        }

    async def list_webhooks(self, request: Request) -> Response:
        list_id = request.path_params["list_id"]
        if list_id not in self.webhooks:
            return error(404)
        hooks = self.webhooks[list_id]
        if request.method == "GET":
            items = list(hooks.values())
            return ok({"webhooks": items, "list_id": list_id, "total_items": len(items)})
        body = await self._json(request)
        if not isinstance(body, dict) or not str(body.get("url") or "").startswith("http"):
            return error(400, detail="The resource submitted could not be validated.")
        wid = uuid.uuid4().hex[:10]
        hooks[wid] = self._hook(list_id, wid, body, None)
        return ok(hooks[wid])

    async def webhook(self, request: Request) -> Response:
        list_id, wid = request.path_params["list_id"], request.path_params["wid"]
        hooks = self.webhooks.get(list_id, {})
        if wid not in hooks:
            return error(404)
        if request.method == "GET":
            return ok(hooks[wid])
        body = await self._json(request)
        if not isinstance(body, dict):
            return error(400, detail="The resource submitted could not be validated.")
        hooks[wid] = self._hook(list_id, wid, body, hooks[wid])
        return ok(hooks[wid])
