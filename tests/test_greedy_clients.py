"""Slow and greedy clients (issue 14), against the real service: more concurrent requests
than the pool holds get a prompt 503 with Retry-After after the bounded queue wait (never
an unbounded hang), unrelated reads recover as soon as the pool frees, concurrent audit
walks do not pile up, and a revoked key stops working on every worker within the cache
time the README documents."""

import asyncio
import uuid

import httpx
import pytest

from app.core.auth import hash_key
from tests.live_service import (
    admin_url_of,
    fresh_database,
    make_keys,
    raw_connection,
    running_service,
)

POOL = {"db_pool_size": "1", "db_pool_timeout_seconds": "1", "auth_cache_seconds": "1"}


@pytest.fixture(scope="module")
async def service(database_url, tmp_path_factory):
    url = await fresh_database(admin_url_of(database_url), "consent_greedy")
    keys = await make_keys(url, ["crm", "auditor"])
    with running_service(url, tmp_path_factory.mktemp("greedy"), workers="2", **POOL) as (
        base,
        _proc,
    ):
        yield base, keys, url


async def test_an_exhausted_pool_answers_503_promptly_and_recovers(service):
    base, keys, url = service
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        s = (await client.post("/v1/subjects", headers=keys["crm"], json={
            "email": f"lock-{uuid.uuid4().hex[:8]}@example.com",
            "category": "customer_contact", "source": "enquiry"})).json()  # fmt: skip
        locker = await raw_connection(url)
        try:
            await locker.execute("BEGIN")
            await locker.execute(
                "SELECT 1 FROM subjects WHERE id = $1 FOR UPDATE", uuid.UUID(s["id"])
            )
            # Each blocked PATCH holds one of the 2 x 2 pooled connections until the lock goes.
            patches = [
                asyncio.create_task(
                    client.patch(
                        f"/v1/subjects/{s['id']}", json={"name": f"N{i}"}, headers=keys["crm"]
                    )
                )
                for i in range(12)
            ]
            await asyncio.sleep(3)
            catalogue = await client.get("/v1/purposes", headers=keys["crm"])
            assert catalogue.status_code in (200, 503)
            if catalogue.status_code == 503:
                assert catalogue.headers["retry-after"].isdigit()
                assert catalogue.headers["content-type"] == "application/problem+json"
            await locker.execute("ROLLBACK")
        finally:
            await locker.close()
        answers = await asyncio.gather(*patches)
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {200, 503}, codes
        assert 503 in codes, codes  # more waiters than connections: some were turned away
        for a in answers:
            if a.status_code == 503:
                assert a.headers["retry-after"].isdigit()
        assert (await client.get("/v1/purposes", headers=keys["crm"])).status_code == 200


async def test_concurrent_audit_walks_do_not_pile_up(service):
    base, keys, _ = service
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.get("/v1/audit/verify", headers=keys["auditor"]) for _ in range(10))
        )
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503} and 200 in codes, codes
    assert all(a.json()["ok"] for a in answers if a.status_code == 200)


async def test_a_revoked_key_stops_on_every_worker_within_the_cache_time(service):
    base, _, url = service
    keys = await make_keys(url, ["crm"])
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(10):  # warm both workers' caches
            assert (await client.get("/v1/purposes", headers=keys["crm"])).status_code == 200
        conn = await raw_connection(url)
        try:
            key = keys["crm"]["Authorization"].split()[1]
            revoked = await conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_key(key)
            )
            assert revoked == "UPDATE 1"
        finally:
            await conn.close()
        await asyncio.sleep(1.5)  # the documented time (auth_cache_seconds = 1) and a margin
        codes = {
            (await client.get("/v1/purposes", headers=keys["crm"])).status_code for _ in range(20)
        }
    assert codes == {401}, codes
