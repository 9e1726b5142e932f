"""Every page sends each security header exactly once, counted in the raw response
headers: a page that sets its own and a middleware that adds the same again once sent
`X-Content-Type-Options: nosniff` twice (a repeated header is read as a list, and some
parsers refuse a repeated policy outright)."""

import httpx

from app.web import session as pages
from tests.conftest import new_subject

# Sent by every page the service renders itself.
PAGE_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
)
# Counted wherever they appear: none may come twice.
ALL_SECURITY_HEADERS = (
    *PAGE_HEADERS,
    "x-robots-tag",
    "strict-transport-security",
    "permissions-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _counts(r: httpx.Response) -> dict[str, int]:
    return {name: len(r.headers.get_list(name)) for name in ALL_SECURITY_HEADERS}


def assert_page_headers(r: httpx.Response, where: str) -> None:
    counts = _counts(r)
    assert all(counts[name] == 1 for name in PAGE_HEADERS), (where, r.status_code, counts)
    assert all(n <= 1 for n in counts.values()), (where, counts)
    csp = r.headers["content-security-policy"]
    assert csp.count("frame-ancestors") == 1 and r.headers["x-frame-options"] == "DENY", where
    assert r.headers["x-content-type-options"] == "nosniff", where


async def _auditor_pages(client: httpx.AsyncClient, auditor, test_settings) -> dict:
    """Every auditor page, as a browser reaches them (session cookie) and as an API
    client does (bearer key), with the sign-in's own pages and failures."""
    shown = {"login form": await client.get("/auditor/login")}
    csrf = shown["login form"].text.split('name="csrf" value="')[1].split('"')[0]
    shown["login refused"] = await client.post(
        "/auditor/login", content=f"csrf={csrf}&api_key=cak_wrong", headers=FORM
    )
    token = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    shown["signed link"] = await client.get(f"/auditor/link/{token}")
    shown["bad link"] = await client.get("/auditor/link/nonsense")
    shown["overview (cookie)"] = await client.get("/v1/reports/overview")
    shown["ropa (cookie)"] = await client.get(
        "/v1/reports/processing-activities", headers={"Accept": "text/html"}
    )
    client.cookies.clear()
    html = {**auditor, "Accept": "text/html"}
    shown["overview (key)"] = await client.get("/v1/reports/overview", headers=html)
    shown["ropa (key)"] = await client.get("/v1/reports/processing-activities", headers=html)
    return shown


async def test_auditor_pages_send_each_security_header_once(client, auditor, test_settings):
    shown = await _auditor_pages(client, auditor, test_settings)
    assert shown["overview (cookie)"].status_code == 200
    for where, r in shown.items():
        assert r.headers["content-type"].startswith("text/html"), where
        assert_page_headers(r, where)


async def _person_pages(client: httpx.AsyncClient, crm) -> dict:
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    links = (await client.post(f"/v1/subjects/{sid}/links", json={}, headers=crm)).json()
    p = "/" + links["preference_url"].split("/", 3)[3]
    u = "/" + links["unsubscribe_url"].split("/", 3)[3]
    shown = {
        "preference page": await client.get(p),
        "unsubscribe page": await client.get(u),
        "unsubscribed": await client.post(u, data={"List-Unsubscribe": "One-Click"}),
        "bad link": await client.get(p[:-4] + "AAAA"),
        "stale form": await client.post(p + "/opt-out", data={"csrf": "x"}),
    }
    csrf = shown["preference page"].text.split('name="csrf" value="')[1].split('"')[0]
    shown["request sent"] = await client.post(p + "/request", data={"csrf": csrf, "type": "access"})
    shown["after the request"] = await client.get(p + "?done=request")
    shown["stylesheet"] = await client.get("/p/assets/person.css")
    return shown


async def test_person_pages_send_each_security_header_once(client, crm):
    shown = await _person_pages(client, crm)
    assert shown["request sent"].status_code == 303
    for where, r in shown.items():
        assert_page_headers(r, where)
        assert len(r.headers.get_list("x-robots-tag")) == 1, where


async def test_other_pages_never_repeat_a_security_header(client):
    """The docs (Swagger UI) and the auditor's stylesheet: no page policy of their own, but
    the guard's headers, once each. The docs page also carries its accessibility edits."""
    for path in ("/docs", "/static/auditor/auditor.css", "/redoc"):
        r = await client.get(path)
        counts = _counts(r)
        assert counts["x-content-type-options"] == 1, (path, counts)
        assert all(n <= 1 for n in counts.values()), (path, counts)
    # What makes Swagger UI's page pass axe-core (its browser test): fail here, by name, if a
    # FastAPI upgrade changes the markup those edits rely on.
    docs = (await client.get("/docs")).text
    assert '<html lang="en-GB">' in docs and '<main id="swagger-ui"></main>' in docs
    assert '"deepLinking": false' in docs
    css = await client.get("/static/auditor/swagger-a11y.css")
    assert css.status_code == 200 and f'href="{css.url.path}"' in docs
