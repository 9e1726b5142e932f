"""Links point home: `consent-api serve --port P` in development, with CONSENT_PUBLIC_BASE_URL
unset, mints links (unsubscribe, preference page, List-Unsubscribe) to the address it listens
on, and they open there; with CONSENT_PUBLIC_BASE_URL set, they use it. The real command, in a
subprocess, on a free port."""

from urllib.parse import urlsplit

import httpx
import pytest

from app.cli.serve import listen_url
from tests.conftest import new_subject
from tests.live_service import admin_url_of, fresh_database, make_keys, running_service


@pytest.fixture(scope="module")
async def database(database_url):
    url = await fresh_database(admin_url_of(database_url), "consent_links")
    return url, await make_keys(url, ["crm"])


async def _links(base: str, crm: dict[str, str]) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        subject = await http.post("/v1/subjects", json=new_subject(), headers=crm)
        assert subject.status_code == 201, subject.text
        r = await http.post(f"/v1/subjects/{subject.json()['id']}/links", json={}, headers=crm)
        assert r.status_code == 200, r.text
        return r.json()


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


@pytest.mark.parametrize("workers", ["1", "2"])  # in the process, and in spawned workers
async def test_links_point_where_serve_listens(database, tmp_path, workers):
    url, keys = database
    with running_service(url, tmp_path, workers=workers) as (base, _proc):
        links = await _links(base, keys["crm"])
        port = urlsplit(base).port
        assert port != 8000
        for link in (links["unsubscribe_url"], links["preference_url"]):
            assert _origin(link) == ("http", "127.0.0.1", port), link
        assert links["headers"]["List-Unsubscribe"] == f"<{links['unsubscribe_url']}>"
        # ... and they open there: the confirmation page and the preference page.
        async with httpx.AsyncClient(timeout=30) as browser:  # the full URL, as a mail reader
            for link in (links["unsubscribe_url"], links["preference_url"]):
                page = await browser.get(link)
                assert page.status_code == 200 and "text/html" in page.headers["content-type"]


async def test_the_public_base_url_wins_when_set(database, tmp_path):
    url, keys = database
    public = "https://consent.example.org/base"
    with running_service(url, tmp_path, public_base_url=public) as (base, _proc):
        links = await _links(base, keys["crm"])
    assert links["unsubscribe_url"].startswith(public + "/u/")
    assert links["preference_url"].startswith(public + "/p/")
    assert links["headers"]["List-Unsubscribe"] == f"<{links['unsubscribe_url']}>"


@pytest.mark.pg_independent
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:8731"),
        ("0.0.0.0", "http://127.0.0.1:8731"),  # every interface: loopback too
        ("::", "http://[::1]:8731"),
        ("::1", "http://[::1]:8731"),
        ("localhost", "http://localhost:8731"),
        ("192.0.2.7", "http://192.0.2.7:8731"),
    ],
)
def test_the_listen_address_as_a_url(host, expected):
    assert listen_url(host, 8731) == expected
