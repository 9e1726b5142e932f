"""The security review's findings, each tried as it was found, over HTTP, with assertions on
what the database holds: a sync key acting as a person, a link key recoverable from stored
data, a body parsed before authentication, and one client locking out its neighbours."""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid

import httpx
from sqlalchemy import text

from app.core.keys import KeyUse, derive, legacy_link_key
from app.core.link_tokens import sign_link
from app.main import create_app
from tests.conftest import new_subject

NOTICE = "Tick to receive white papers and blog posts from JI Group."


async def _subject(client, crm):
    r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def _key_id(db, headers) -> uuid.UUID:
    key = headers["Authorization"].split(" ", 1)[1]
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (
        await db.execute(text("SELECT id FROM api_keys WHERE key_hash = :h"), {"h": digest})
    ).scalar_one()


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no form token on the page"
    return match.group(1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(key: bytes, kid: str, kind: str, subject_id: str, email_hash: str, days: int) -> str:
    """A token built as link_tokens builds one, with a key an attacker holds."""
    payload = {
        "k": kid,
        "t": kind,
        "s": uuid.UUID(subject_id).hex,
        "h": email_hash,
        "p": None,
        "e": int(time.time()) + days * 86400,
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, b"consent-api/link/v1\n" + body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


# --- Finding 1: a sync key may mint unsubscribe links only -------------------------------


async def test_a_sync_key_gets_no_preference_link_and_its_link_acts_on_its_record(
    client, crm, make_key, db
):
    s = await _subject(client, crm)
    sync = await make_key("sync")
    r = await client.post(f"/v1/subjects/{s['id']}/links", json={}, headers=sync)
    assert r.status_code == 200, r.text
    links = r.json()
    assert links["preference_url"] is None and links["preference_expires_at"] is None
    assert links["unsubscribe_url"] and links["headers"]["List-Unsubscribe"]
    # The CRM still gets both.
    both = (await client.post(f"/v1/subjects/{s['id']}/links", json={}, headers=crm)).json()
    assert both["preference_url"].startswith("http://127.0.0.1:8000/p/")
    # The sync key's unsubscribe link works, and what it did names the key that minted it.
    r = await client.post(
        _path(links["unsubscribe_url"]),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    actor = (
        await db.execute(
            text(
                "SELECT actor_key_id, actor_role FROM audit_entries WHERE actor_role = 'subject'"
                " AND action LIKE 'optout%' ORDER BY id DESC LIMIT 1"
            )
        )
    ).one()
    assert actor.actor_key_id == await _key_id(db, sync)
    # An unsubscribe token never opens the preference page.
    token = links["unsubscribe_url"].rsplit("/", 1)[1]
    assert (await client.get(f"/p/{token}")).status_code == 404


async def test_consent_given_on_the_page_records_the_minting_key(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    body = {"purpose": "content_subscriptions"}  # its form comes first on the page
    links = (await client.post(f"/v1/subjects/{s['id']}/links", json=body, headers=crm)).json()
    page = _path(links["preference_url"])
    html = (await client.get(page)).text
    sha = re.search(r'name="notice_sha256" value="([^"]+)"', html).group(1)
    policy = re.search(r'name="policy_version" value="([^"]*)"', html).group(1)
    r = await client.post(
        page + "/give",
        data={
            "csrf": _csrf(html),
            "purpose": "content_subscriptions",
            "notice_sha256": sha,
            "policy_version": policy,
        },
    )
    assert r.status_code == 303, r.text
    event = (
        await db.execute(
            text(
                "SELECT recorded_by_key_id, recorded_by FROM consent_events"
                " WHERE subject_id = :s AND action = 'given'"
            ),
            {"s": s["id"]},
        )
    ).one()
    assert event.recorded_by_key_id == await _key_id(db, crm)
    assert event.recorded_by == "person (signed link)"


# --- Finding 2: no key can be recovered from what the service stores ----------------------


async def test_a_rectified_value_never_yields_a_link_key(client, crm, test_settings, db):
    victim = await _subject(client, crm)
    attacker = await _subject(client, crm)
    # The attack: rectify a name to the label the old link key was derived with.
    r = await client.post(
        "/v1/rights-requests",
        json={"type": "rectification", "subject_id": attacker["id"]},
        headers=crm,
    )
    rid = r.json()["id"]
    await client.post(
        f"/v1/rights-requests/{rid}/verify-identity", json={"method": "email"}, headers=crm
    )
    r = await client.post(
        f"/v1/rights-requests/{rid}/complete", json={"changes": {"name": "link-key"}}, headers=crm
    )
    assert r.status_code == 200, r.text
    detail = (
        await db.execute(
            text(
                "SELECT detail FROM rights_request_events WHERE request_id = :r"
                " AND action = 'completed'"
            ),
            {"r": rid},
        )
    ).scalar_one()
    stolen = bytes.fromhex(detail["private"]["fields"]["name"]["new_hmac"])
    # What is stored is neither the retired link key nor any key in use now.
    assert stolen != legacy_link_key(test_settings)
    assert stolen not in {derive(test_settings, use) for use in KeyUse}
    email_hash = (
        await db.execute(text("SELECT email_hash FROM subjects WHERE id = :s"), {"s": victim["id"]})
    ).scalar_one()
    # A preference link forged with it, under either key id, for 80 days: refused.
    for kid in ("s0", "d1"):
        forged = _forge(stolen, kid, "p", victim["id"], email_hash, days=80)
        page = await client.get(f"/p/{forged}")
        assert page.status_code == 404 and victim["email"] not in page.text
    # Even the retired key itself no longer opens a preference page...
    old_key = legacy_link_key(test_settings)
    forged = _forge(old_key, "s0", "p", victim["id"], email_hash, days=10)
    assert (await client.get(f"/p/{forged}")).status_code == 404
    # ...and verifies an unsubscribe link only within the life of the links it signed.
    too_long = _forge(old_key, "s0", "u", victim["id"], email_hash, days=500)
    assert (await client.get(f"/u/{too_long}")).status_code == 404
    issued_before = _forge(old_key, "s0", "u", victim["id"], email_hash, days=30)
    assert (await client.get(f"/u/{issued_before}")).status_code == 200


async def test_links_are_signed_with_a_derived_key_of_their_own(client, crm, test_settings):
    s = await _subject(client, crm)
    links = (await client.post(f"/v1/subjects/{s['id']}/links", json={}, headers=crm)).json()
    token = links["preference_url"].rsplit("/", 1)[1]
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert payload["k"] == "d1" and payload["m"]
    expected = hmac.new(
        derive(test_settings, KeyUse.LINKS), b"consent-api/link/v1\n" + body.encode(), "sha256"
    ).digest()
    assert _b64(expected) == mac
    # The same claims signed by the test with `sign_link` verify on the page (the key is
    # the one the service uses).
    again = sign_link(
        test_settings,
        kind="p",
        subject_id=uuid.UUID(s["id"]),
        email_hash=payload["h"],
        purpose=None,
        expires_at=payload["e"],
    )
    assert (await client.get(f"/p/{again}")).status_code == 200


# --- Finding 3: authentication and scope before the body -----------------------------------


class BodyReads:
    """ASGI wrapper counting the body messages the app pulls from the client."""

    def __init__(self, app):
        self.app, self.reads = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                self.reads += 1
            return message

        await self.app(scope, counted, send)


def _big_batch() -> bytes:
    addresses = [f"{'ü' * 40}{i}@{'ñandú' * 8}.example.com" for i in range(1000)]
    body = json.dumps({"purpose": "email_campaigns", "subjects": addresses}).encode()
    assert len(body) > 300_000
    return body


async def test_a_wrong_key_is_refused_before_any_body_is_read(
    engine, conn, test_settings, make_key
):
    app = create_app(test_settings, engine=engine, session_bind=conn)
    counting = BodyReads(app)
    website = await make_key("website")
    paths = (
        "/v1/decisions/batch",  # served directly
        "/v1/decisions",
        "/v1/consent-events",
        "/v1/subjects",  # served by FastAPI
        "/v1/rights-requests",
    )
    transport = httpx.ASGITransport(app=counting)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        big = _big_batch()
        for path in paths:
            r = await client.post(
                path,
                content=big,
                headers={
                    "Authorization": "Bearer cak_" + "x" * 43,
                    "Content-Type": "application/json",
                },
            )
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
        # A valid key without the route's scope: 403, and still not a byte read.
        r = await client.post(
            "/v1/subjects", content=big, headers={**website, "Content-Type": "application/json"}
        )
        assert r.status_code == 403
        r = await client.post(
            "/v1/decisions/batch",
            content=big,
            headers={**(await make_key("auditor")), "Content-Type": "application/json"},
        )
        assert r.status_code == 403
        assert counting.reads == 0
        # The same body with a key that may: read, and answered (every address unknown).
        crm = await make_key("crm")
        r = await client.post(
            "/v1/decisions/batch", content=big, headers={**crm, "Content-Type": "application/json"}
        )
        assert r.status_code == 200, r.text
        assert counting.reads >= 1
        items = r.json()["items"]
        assert len(items) == 1000 and {i["reasons"][0] for i in items} == {"subject_unknown"}


async def test_an_overlong_reference_in_a_batch_is_refused_by_its_length(client, crm, db):
    before = (await db.execute(text("SELECT count(*) FROM decisions"))).scalar()
    r = await client.post(
        "/v1/decisions/batch",
        json={"purpose": "email_campaigns", "subjects": ["a" * 300 + "@example.com"]},
        headers=crm,
    )
    assert r.status_code == 422
    assert "longer than an e-mail address" in r.text
    assert (await db.execute(text("SELECT count(*) FROM decisions"))).scalar() == before


# --- Finding 6: a valid key is served from an address that failed -------------------------


async def test_a_valid_key_is_served_from_an_address_that_just_failed_twenty_times(
    engine, conn, test_settings, make_key
):
    app = create_app(test_settings, engine=engine, session_bind=conn)
    crm = await make_key("crm")
    transport = httpx.ASGITransport(app=app, client=("192.0.2.44", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        codes = [
            (
                await client.get("/v1/purposes", headers={"Authorization": f"Bearer cak_no{i}"})
            ).status_code
            for i in range(20)
        ]
        assert codes == [401] * 20
        assert (
            await client.get("/v1/purposes", headers={"Authorization": "Bearer cak_no"})
        ).status_code == 429
        r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
        assert r.status_code == 201, r.text
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM subjects WHERE id = :i"), {"i": r.json()["id"]}
            )
        ).scalar()
        assert stored == 1
        # Failures still count: the next wrong key is refused at once.
        assert (await client.get("/v1/purposes")).status_code == 429
