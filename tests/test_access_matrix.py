"""Every route x every role x no key, generated from the app's routes at run time and
checked against API.md's role table in tests/access_table.py. A new route without a rule
fails here, naming the line to add."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.core.config import Settings
from app.main import create_app
from tests.access_table import ACCESS, EVERY_ROLE, OWN_CREDENTIAL, PUBLIC

TABLE_FILE = "tests/access_table.py"
# Called as an API client would (pages answer a browser's anonymous visit with their login).
JSON_CLIENT = {"Accept": "application/json"}


def app_operations(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path template) for every route, whatever the nesting of included routers."""

    def walk(items: Any) -> Iterator[tuple[str, str]]:
        for item in items:
            if hasattr(item, "effective_candidates"):  # FastAPI's lazily included router
                yield from walk(item.effective_candidates())
                continue
            if hasattr(item, "routes") and not hasattr(item, "methods"):  # a Mount
                yield from walk(item.routes)
                continue
            route = getattr(item, "original_route", item)
            path = getattr(item, "path", None) or getattr(route, "path", None)
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":  # HEAD follows GET
                    yield method, path

    return walk(app.routes)


def _operations() -> list[tuple[str, str]]:
    app = create_app(Settings(env="development"))
    return sorted(set(app_operations(app)))


OPERATIONS = _operations()


def fill(path: str) -> str:
    """A concrete path: unknown UUIDs for ids, a catalogue key otherwise."""
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        name = out[start + 1 : end]
        value = str(uuid.uuid4()) if name.endswith("id") else "email_campaigns"
        out = out[:start] + value + out[end + 1 :]
    return out


def test_the_table_has_no_stale_entries():
    stale = sorted(set(ACCESS) - set(OPERATIONS))
    assert not stale, f"{TABLE_FILE}: these entries match no route; remove them: {stale}"


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
async def test_route_against_every_role(client, make_key, method, path):
    rule = ACCESS.get((method, path))
    assert rule is not None, (
        f"No access rule for {method} {path}: add `({method!r}, {path!r}): frozenset({{...}}),` "
        f"(the roles API.md allows) or `PUBLIC` to ACCESS in {TABLE_FILE}"
    )
    url = fill(path)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    anonymous = await client.request(method, url, json=body, headers=JSON_CLIENT)
    if rule == PUBLIC:
        assert anonymous.status_code not in (401, 403), (method, path, anonymous.status_code)
        return
    if rule == OWN_CREDENTIAL:  # an API key opens nothing here: only the route's own does
        assert anonymous.status_code in (401, 403), (method, path, anonymous.status_code)
        keyed = await client.request(
            method, url, json=body, headers={**JSON_CLIENT, **await make_key("admin")}
        )
        assert keyed.status_code == anonymous.status_code, (method, path, keyed.status_code)
        return
    assert anonymous.status_code == 401, (method, path, "no key", anonymous.status_code)
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    for role in sorted(EVERY_ROLE):
        headers = await make_key(role)
        r = await client.request(method, url, json=body, headers={**JSON_CLIENT, **headers})
        if role in rule:
            assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code, r.text)
            assert r.json()["type"] == "urn:consent-api:problem:forbidden"
