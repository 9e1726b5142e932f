"""500 concurrent consent events and opt-outs for the same 5 subjects, over HTTP against
the real service (issue 14): the current state is the newest event by occurred_at, the
change feed has no gap or duplicate and stays ordered, audit/verify is ok, every request gets a
clean 2xx (no deadlock or serialisation error reaches a client)."""

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import new_subject
from tests.live_service import (
    admin_url_of,
    fresh_database,
    make_keys,
    raw_connection,
    running_service,
)
from tests.test_consent import give

REQUESTS = 500
PARALLEL = 25


@pytest.fixture(scope="module")
async def service(database_url, tmp_path_factory):
    url = await fresh_database(admin_url_of(database_url), "consent_race")
    keys = await make_keys(url, ["crm", "auditor", "website", "sync"])
    with running_service(url, tmp_path_factory.mktemp("race")) as (base, _proc):
        yield base, keys, url


async def test_concurrent_writes_for_the_same_subjects_end_consistent(service):
    base, keys, url = service
    rng = random.Random(14)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        subjects = []
        for _ in range(5):
            r = await client.post("/v1/subjects", json=new_subject(), headers=keys["crm"])
            subjects.append(r.json())
        now = datetime.now(UTC)
        offsets = rng.sample(range(1, 10**6), REQUESTS)  # distinct times: no ties
        plans = []
        for i in range(REQUESTS):
            s = rng.choice(subjects)
            if i % 5 == 4:
                plans.append(("/v1/opt-outs", {"email": s["email"], "source": "crm"},
                              rng.choice(["crm", "website", "sync"])))  # fmt: skip
                continue
            action = rng.choice(["given", "withdrawn"])
            at = (now - timedelta(seconds=offsets[i])).isoformat()
            body = give(s["id"], occurred_at=at) if action == "given" else {
                "subject_id": s["id"], "purpose": "content_subscriptions",
                "action": "withdrawn", "method": "web_form", "occurred_at": at}  # fmt: skip
            plans.append(("/v1/consent-events", body, rng.choice(["crm", "website"])))
        gate = asyncio.Semaphore(PARALLEL)

        async def send(path, body, role):
            async with gate:
                return await client.post(path, json=body, headers=keys[role])

        answers = await asyncio.gather(*(send(*p) for p in plans))
        bad = [(a.status_code, a.text[:200]) for a in answers if a.status_code not in (200, 201)]
        assert not bad, bad[:5]

        newest: dict[str, tuple[str, str]] = {}
        for path, body, _ in plans:
            if path == "/v1/consent-events":
                at = datetime.fromisoformat(body["occurred_at"])
                if body["subject_id"] not in newest or at > datetime.fromisoformat(
                    newest[body["subject_id"]][0]
                ):
                    newest[body["subject_id"]] = (body["occurred_at"], body["action"])
        for s in subjects:
            states = (
                await client.get(f"/v1/subjects/{s['id']}/consents", headers=keys["crm"])
            ).json()
            items = states["items"] if isinstance(states, dict) else states
            current = {i["purpose"]: i for i in items}["content_subscriptions"]
            assert current["status"] == newest[s["id"]][1], (s["id"], current, newest[s["id"]])

        seqs, after = [], 0
        while True:
            page = (await client.get("/v1/changes", params={"after": after, "limit": 1000},
                                     headers=keys["auditor"])).json()  # fmt: skip
            seqs += [item["seq"] for item in page["items"]]
            if not page["items"]:
                break
            after = page["next_after"]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # and no gap

        for _ in range(60):  # the sealer runs every half second
            verify = (await client.get("/v1/audit/verify", headers=keys["auditor"])).json()
            if verify["ok"]:
                break
            await asyncio.sleep(0.5)
        assert verify["ok"], verify

    conn = await raw_connection(url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM consent_events WHERE subject_id = ANY($1::uuid[])",
            [uuid.UUID(s["id"]) for s in subjects],
        )
    finally:
        await conn.close()
    assert stored == sum(1 for p in plans if p[0] == "/v1/consent-events")
