"""A fake of the SurveyMonkey API v3 (the endpoints the sync worker calls).

Shapes follow SurveyMonkey's reference: `Authorization: bearer <access token>`; lists as
{data, per_page, page, total, links}; contacts {id, first_name, last_name, email, href} with
a status active | optout | bounced; errors as {"error": {id, name, docs, message,
http_status_code}}."""

import itertools
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.faults import FaultMiddleware, Faults

DOCS = "https://developer.surveymonkey.com/api/v3/#error-codes"
ERRORS = {
    400: ("1000", "Bad Request", "Invalid request."),
    401: ("1011", "Authorization Error", "The authorization token was not provided or is invalid."),
    404: ("1020", "Resource Not Found", "There was an error retrieving the requested resource."),
    429: ("1040", "Rate Limit Reached", "Too many requests were made, try again later."),
    500: ("1050", "Internal Server Error", "Oh bananas! We couldn't process your request."),
    503: ("1051", "Service Unavailable", "The service is temporarily unavailable."),
}


def error_body(status: int) -> tuple[str, bytes]:
    code, name, message = ERRORS.get(status, ("1050", "Error", "Error."))
    body = {
        "error": {
            "id": code,
            "name": name,
            "docs": DOCS,
            "message": message,
            "http_status_code": status,
        }
    }
    return "application/json", orjson.dumps(body)


def error(status: int) -> Response:
    content_type, body = error_body(status)
    return Response(body, status_code=status, media_type=content_type)


def ok(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


class FakeSurveymonkey:
    def __init__(self, token: str = "sm-fake-token", list_ids: tuple[str, ...] = ("4321",)):
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, list[str]] = {lid: [] for lid in list_ids}
        self.names: dict[str, str] = {lid: f"Contacts {lid}" for lid in list_ids}
        self._ids = itertools.count(1000)
        self.faults = Faults()
        routes = [
            Route("/v3/contacts", self.list_contacts, methods=["GET"]),
            Route("/v3/contacts/{cid}", self.contact, methods=["GET", "DELETE"]),
            Route("/v3/contact_lists/{lid}/contacts", self.list_members, methods=["GET"]),
            Route("/v3/contact_lists/{lid}", self.contact_list, methods=["GET"]),
            Route("/v3/users/me", self.me, methods=["GET"]),
        ]
        self.app = FaultMiddleware(self._auth(Starlette(routes=routes)), self.faults, error_body)

    def add(
        self,
        email: str,
        *,
        status: str = "active",
        list_id: str | None = "4321",
        first_name: str = "Test",
        last_name: str = "Person",
        contact_id: str | None = None,
    ) -> str:
        """A contact (`contact_id` to put one back under the id it had)."""
        cid = contact_id or str(next(self._ids))
        self.contacts[cid] = {
            "id": cid,
            "first_name": first_name,
            "last_name": last_name,
            "email": email,
            "status": status,
            "custom_fields": {},
        }
        if list_id is not None:
            self.lists[list_id].append(cid)
        return cid

    def emails_in(self, list_id: str, status: str = "active") -> set[str]:
        return {
            self.contacts[c]["email"]
            for c in self.lists[list_id]
            if c in self.contacts and self.contacts[c]["status"] == status
        }

    def _auth(self, app: Any) -> Any:
        async def guarded(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                header = dict(scope["headers"]).get(b"authorization", b"").decode()
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or token != self.token:
                    await error(401)(scope, receive, send)
                    return
            await app(scope, receive, send)

        return guarded

    def _page(self, request: Request, ids: list[str]) -> Response:
        q = request.query_params
        status = q.get("status", "active")
        chosen = [
            self.contacts[c]
            for c in ids
            if c in self.contacts and self.contacts[c]["status"] == status
        ]
        per_page = min(int(q.get("per_page", 50)), 1000)
        page = max(int(q.get("page", 1)), 1)
        items = chosen[(page - 1) * per_page : page * per_page]
        base = str(request.url.replace(query=""))
        links = {"self": f"{base}?page={page}&per_page={per_page}"}
        if page * per_page < len(chosen):
            links["next"] = f"{base}?page={page + 1}&per_page={per_page}"
        data = [
            {
                "id": c["id"],
                "first_name": c["first_name"],
                "last_name": c["last_name"],
                "email": c["email"],
                "href": f"{base.split('/v3/')[0]}/v3/contacts/{c['id']}",
            }
            for c in items
        ]
        return ok(
            {"data": data, "per_page": per_page, "page": page, "total": len(chosen), "links": links}
        )

    async def list_contacts(self, request: Request) -> Response:
        return self._page(request, list(self.contacts))

    async def list_members(self, request: Request) -> Response:
        lid = request.path_params["lid"]
        if lid not in self.lists:
            return error(404)
        return self._page(request, self.lists[lid])

    async def me(self, request: Request) -> Response:
        """GET /users/me: the account the token belongs to."""
        base = str(request.url.replace(query="")).split("/v3/")[0]
        return ok(
            {
                "id": "123456789",
                "username": "fake-account",
                "account_type": "enterprise_platform",
                "language": "en",
                "email_verified": True,
                "date_created": "2024-01-15T09:00:00",
                "href": f"{base}/v3/users/me",
            }
        )

    async def contact_list(self, request: Request) -> Response:
        """GET /contact_lists/{id}: {id, name, href}."""
        lid = request.path_params["lid"]
        if lid not in self.lists:
            return error(404)
        href = str(request.url.replace(query=""))
        return ok({"id": lid, "name": self.names[lid], "href": href})

    async def contact(self, request: Request) -> Response:
        contact = self.contacts.get(request.path_params["cid"])
        if contact is None:
            return error(404)
        if request.method == "DELETE":
            del self.contacts[contact["id"]]
            for members in self.lists.values():
                if contact["id"] in members:
                    members.remove(contact["id"])
        return ok({k: v for k, v in contact.items() if k != "status"})
