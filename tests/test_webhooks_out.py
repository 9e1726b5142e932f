"""Webhooks out against a real HTTP receiver on 127.0.0.1 (bench/webhook_receiver.py) and
the test's PostgreSQL: Standard Webhooks signatures (checked with the `standardwebhooks`
library), order per subject under retries, the 24-hour window on an injected clock, SSRF
refusals, secret rotation, and a worker stopped mid-delivery."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.db import create_sessionmaker
from app.core.errors import Unprocessable
from app.integrations.webhooks_worker import deliver_pending
from app.models.base import utcnow
from app.models.webhook import WebhookEndpointPut
from app.services.changes import feed
from app.services.webhooks import addresses, endpoints
from app.services.webhooks.sender import Sender, ping
from bench.webhook_receiver import Receiver

KINDS = ["consent.withdrawn", "optout"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    r.url = await r.start()  # type: ignore[attr-defined]
    yield r
    await r.close()


@pytest.fixture
def maker(conn: AsyncConnection) -> Any:
    return create_sessionmaker(conn, join_transaction_mode="create_savepoint")


async def register(client: Any, admin: dict[str, str], url: str, key: str = "crm") -> str:
    answer = await client.put(
        f"/v1/webhook-endpoints/{key}", headers=admin, json={"url": url, "kinds": KINDS}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["secret"]


async def entries(db: AsyncSession, *subjects: uuid.UUID, kind: str = "optout") -> None:
    for subject in subjects:
        await feed.append(db, kind, subject_id=subject, email_hash="h" * 64)
    await feed.sequence_pending(db)
    await db.commit()


def clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def ids_of(r: Receiver, status: int | None = None) -> list[str]:
    return [q.headers["webhook-id"] for q in r.requests if status is None or q.status == status]


async def test_a_feed_entry_is_posted_signed_as_standard_webhooks(
    client, admin, auditor, db, maker, receiver, test_settings
):
    secret = await register(client, admin, receiver.url + "/hook")  # type: ignore[attr-defined]
    assert secret.startswith("whsec_")
    subject = uuid.uuid4()
    await entries(db, subject)
    await entries(db, uuid.uuid4(), kind="basis.set")  # a kind not chosen: not sent
    assert await deliver_pending(maker, Sender(test_settings)) == 1
    (got,) = receiver.requests
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["id"] == got.headers["webhook-id"] and payload["type"] == "optout"
    # The entry as the feed answers it (the shared test database holds others before it).
    after = payload["data"]["seq"] - 1
    feed = await client.get("/v1/changes", params={"after": after, "limit": 1}, headers=admin)
    feed_entry = feed.json()["items"][0]
    assert payload["data"] == feed_entry and payload["timestamp"] == feed_entry["at"]
    listed = (await client.get("/v1/webhook-endpoints", headers=auditor)).json()["items"]
    assert listed[0]["key"] == "crm" and "secret" not in listed[0]
    shown = await client.get(
        "/v1/webhook-endpoints/crm/deliveries?status=delivered", headers=auditor
    )
    (delivery,) = shown.json()["items"]
    assert delivery["id"] == payload["id"] and delivery["attempts"] == 1
    assert delivery["last_status"] == 200 and delivery["next_try_at"] is None
    again = await client.put(
        "/v1/webhook-endpoints/crm",
        headers=admin,
        json={"url": receiver.url, "kinds": KINDS},  # type: ignore[attr-defined]
    )
    assert again.status_code == 200 and again.json()["secret"] is None  # shown once only


async def test_an_unknown_kind_is_refused_with_the_known_ones(client, admin):
    answer = await client.put(
        "/v1/webhook-endpoints/x", headers=admin, json={"url": "https://a.example", "kinds": ["no"]}
    )
    assert answer.status_code == 422 and "optout" in answer.json()["known"]


async def test_per_subject_order_holds_while_an_earlier_one_is_retried(
    client, admin, db, maker, receiver, test_settings
):
    await register(client, admin, receiver.url)  # type: ignore[attr-defined]
    a, b = uuid.uuid4(), uuid.uuid4()
    await entries(db, a, a, b)  # A1, A2, B1
    first: set[str] = set()

    def refuse_a1_once(headers: dict[str, str], body: bytes) -> int:
        data = json.loads(body)["data"]
        if data["subject_id"] == str(a) and data["seq"] not in first and not first:
            first.add(data["seq"])
            return 500
        return 200

    receiver.answer = refuse_a1_once
    sender, t0 = Sender(test_settings), utcnow()
    await deliver_pending(maker, sender, now=clock(t0))
    seqs = [(json.loads(q.body)["data"]["seq"], q.status) for q in receiver.requests]
    assert len(seqs) == 2 and (seqs[0][1], seqs[1][1]) in {(500, 200), (200, 500)}  # A1, B1
    await deliver_pending(maker, sender, now=clock(t0 + timedelta(hours=1)))
    sent_a = [
        (json.loads(q.body)["data"]["seq"], q.status)
        for q in receiver.requests
        if json.loads(q.body)["data"]["subject_id"] == str(a)
    ]
    assert [s for s, _ in sent_a] == sorted(s for s, _ in sent_a)  # A2 only after A1
    assert [st for _, st in sent_a] == [500, 200, 200]


async def test_after_24_hours_of_refusals_a_delivery_fails_and_can_be_sent_again(
    client, admin, db, maker, receiver, test_settings
):
    await register(client, admin, receiver.url)  # type: ignore[attr-defined]
    receiver.answer = lambda h, b: 500
    await entries(db, uuid.uuid4())
    sender, t0 = Sender(test_settings), utcnow()
    for hours in (0, 1, 12, 23):
        await deliver_pending(maker, sender, now=clock(t0 + timedelta(hours=hours)))
    listed = await client.get("/v1/webhook-endpoints/crm/deliveries", headers=admin)
    assert listed.json()["items"][0]["status"] == "pending"
    await deliver_pending(maker, sender, now=clock(t0 + timedelta(hours=24, minutes=1)))
    (failed,) = (
        await client.get("/v1/webhook-endpoints/crm/deliveries?status=failed", headers=admin)
    ).json()["items"]
    assert failed["attempts"] == 5 and failed["last_status"] == 500
    metrics = (await client.get("/metrics", headers=admin)).text
    assert 'consent_webhook_failures{endpoint="crm"} 1.0' in metrics
    receiver.answer = lambda h, b: 200
    retried = await client.post(
        f"/v1/webhook-endpoints/crm/deliveries/{failed['id']}/retry", headers=admin
    )
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert await deliver_pending(maker, sender) == 1
    assert ids_of(receiver, 200) == [failed["id"]]
    again = await client.post(
        f"/v1/webhook-endpoints/crm/deliveries/{failed['id']}/retry", headers=admin
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://192.168.0.10/x",
        "https://169.254.169.254/latest",
        "https://[::1]/x",
        "https://localhost/x",
    ],
)
async def test_outside_development_such_urls_are_refused_at_registration(db, test_settings, url):
    production = test_settings.model_copy(update={"env": "production"})
    with pytest.raises(Unprocessable):
        await endpoints.put(db, production, "x", WebhookEndpointPut(url=url, kinds=KINDS))


def test_only_public_addresses_pass() -> None:
    refused = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
    ]
    assert all(addresses.refusal(a) for a in refused)
    assert addresses.refusal("93.184.216.34") is None
    assert addresses.refusal("2606:2800:220:1:248:1893:25c8:1946") is None


async def test_a_name_resolving_to_loopback_is_refused_when_delivering(
    client, admin, db, maker, receiver, test_settings
):
    """Registered while the name looked public; at delivery it resolves to 127.0.0.1 (DNS
    rebinding): refused before any connection, and retried later as a failure."""
    await register(client, admin, "https://hooks.example.com/x")
    await entries(db, uuid.uuid4())
    production = test_settings.model_copy(update={"env": "production"})

    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    await deliver_pending(maker, Sender(production, resolve=rebinding))
    (d,) = (await client.get("/v1/webhook-endpoints/crm/deliveries", headers=admin)).json()["items"]
    assert d["status"] == "pending" and d["last_status"] is None
    assert d["last_error"] == "refused: the host resolves to a loopback address"
    # the real resolver: `localhost` is loopback too
    endpoint = endpoints.Signing(
        "crm", receiver.url.replace("127.0.0.1", "localhost"), ("whsec_AAAA",)
    )  # type: ignore[attr-defined]
    status, said = await Sender(production).post(endpoint, "m", b"{}")
    assert status is None and said.startswith("refused:") and receiver.requests == []


async def test_the_call_goes_to_the_checked_address_with_the_name_as_host(
    client, admin, db, maker, receiver, test_settings
):
    port = receiver.url.rsplit(":", 1)[1]  # type: ignore[attr-defined]
    await register(client, admin, f"http://hooks.example.test:{port}/in")

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "hooks.example.test"
        return ["127.0.0.1"]

    await entries(db, uuid.uuid4())
    await deliver_pending(maker, Sender(test_settings, resolve=resolve))
    assert receiver.requests[0].headers["host"] == f"hooks.example.test:{port}"


async def test_a_redirect_is_not_followed(client, admin, db, maker, receiver, test_settings):
    await register(client, admin, receiver.url)  # type: ignore[attr-defined]
    receiver.answer = lambda h, b: 302
    await entries(db, uuid.uuid4())
    await deliver_pending(maker, Sender(test_settings))
    assert len(receiver.requests) == 1
    (d,) = (await client.get("/v1/webhook-endpoints/crm/deliveries", headers=admin)).json()["items"]
    assert (d["status"], d["last_status"], d["last_error"]) == (
        "pending",
        302,
        "redirect not followed",
    )


async def test_410_disables_the_endpoint(client, admin, db, maker, receiver, test_settings):
    await register(client, admin, receiver.url)  # type: ignore[attr-defined]
    receiver.answer = lambda h, b: 410
    await entries(db, uuid.uuid4())
    await deliver_pending(maker, Sender(test_settings))
    (e,) = (await client.get("/v1/webhook-endpoints", headers=admin)).json()["items"]
    assert e["disabled_at"] is not None
    await entries(db, uuid.uuid4())  # not queued while disabled
    assert await deliver_pending(maker, Sender(test_settings)) == 0
    listed = (await client.get("/v1/webhook-endpoints/crm/deliveries", headers=admin)).json()
    assert len(listed["items"]) == 1


async def test_after_a_rotation_both_secrets_sign_for_24_hours_then_only_the_new(
    client, admin, db, maker, receiver, test_settings
):
    old = await register(client, admin, receiver.url)  # type: ignore[attr-defined]
    rotated = await client.post("/v1/webhook-endpoints/crm/rotate-secret", headers=admin)
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    sender, t0 = Sender(test_settings), utcnow()
    await entries(db, uuid.uuid4())
    await deliver_pending(maker, sender, now=clock(t0 + timedelta(hours=23)))
    got = receiver.requests[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(got.body, got.headers)
    Webhook(new).verify(got.body, got.headers)
    await entries(db, uuid.uuid4())
    await deliver_pending(maker, sender, now=clock(t0 + timedelta(hours=24, minutes=1)))
    got = receiver.requests[-1]
    Webhook(new).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(got.body, got.headers)


async def test_a_restart_mid_delivery_loses_nothing_and_repeats_only_what_was_in_flight(
    client, admin, db, maker, receiver, test_settings
):
    await register(client, admin, receiver.url)  # type: ignore[attr-defined]
    await entries(db, *[uuid.uuid4() for _ in range(20)])
    held = asyncio.Event()
    answered = 0

    async def five_then_hold(headers: dict[str, str], body: bytes) -> int:
        nonlocal answered
        if answered < 5:
            answered += 1
            return 200
        await held.wait()
        return 200

    receiver.answer = five_then_hold
    settings = test_settings.model_copy(update={"webhook_max_in_flight": 4})
    worker = asyncio.create_task(deliver_pending(maker, Sender(settings), flush_every=1))
    for _ in range(500):  # until 5 answered and 4 held (the in-flight ones)
        if len(receiver.requests) >= 9:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the five answers stored
    in_flight = {q.headers["webhook-id"] for q in receiver.requests if q.status is None}
    assert len(in_flight) == 4
    worker.cancel()  # the crash
    with pytest.raises(asyncio.CancelledError):
        await worker
    receiver.answer = lambda h, b: 200
    assert await deliver_pending(maker, Sender(settings)) == 15  # the restarted worker
    seen = ids_of(receiver)
    assert len(set(seen)) == 20
    repeated = {i for i in seen if seen.count(i) > 1}
    assert repeated <= in_flight


async def test_ping_is_signed_and_answers(receiver, test_settings):
    secret = "whsec_" + "QUJD" * 8
    endpoint = endpoints.Signing("crm", receiver.url, (secret,))  # type: ignore[attr-defined]
    status, _ = await ping(test_settings, endpoint)
    assert status == 200
    got = receiver.requests[0]
    assert Webhook(secret).verify(got.body, got.headers) == {
        "id": got.headers["webhook-id"],
        "type": "ping",
        "timestamp": json.loads(got.body)["timestamp"],
        "data": {},
    }


async def test_deleting_an_endpoint_removes_its_deliveries(client, admin, db):
    await register(client, admin, "https://hooks.example.com/x")
    await entries(db, uuid.uuid4())
    assert (await client.delete("/v1/webhook-endpoints/crm", headers=admin)).status_code == 204
    assert (await client.delete("/v1/webhook-endpoints/crm", headers=admin)).status_code == 404
    left = await db.execute(text("SELECT count(*) FROM webhook_deliveries"))
    assert left.scalar_one() == 0
