"""A real deadlock between two requests (issue 14): PostgreSQL aborts one, the service runs
it again by itself, and both clients get a 200; nothing about the deadlock reaches them."""

import asyncio
import random

import httpx
from sqlalchemy import text

from app.core.db import SessionDep
from app.main import create_app
from app.services.access import api_keys


async def test_a_deadlocked_request_is_retried_and_both_succeed(engine, test_settings):
    app = create_app(test_settings, engine=engine)  # real commits, one connection each
    calls: list[tuple[int, int]] = []
    holding: list[int] = []
    both_hold_their_first_lock = asyncio.Event()
    base = random.randint(10**9, 2 * 10**9)

    @app.post("/deadlock/{first}/{second}")
    async def lock_two(first: int, second: int, session: SessionDep) -> dict[str, bool]:
        calls.append((first, second))
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": base + first})
        holding.append(first)
        if len(calls) <= 2:  # the first two attempts meet, then cross: a deadlock
            if len(holding) == 2:
                both_hold_their_first_lock.set()
            await asyncio.wait_for(both_hold_their_first_lock.wait(), 30)
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": base + second})
        return {"ok": True}

    # Every keyed path is authenticated before routing (app.core.auth_first): a real key.
    async with app.state.sessionmaker() as session:
        key = await api_keys.create_key(session, name=f"deadlock-{base}", role="crm")
        await session.commit()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
        one, two = await asyncio.gather(
            client.post("/deadlock/1/2", headers=headers, content=b"{}"),
            client.post("/deadlock/2/1", headers=headers, content=b"{}"),
        )
    assert (one.status_code, two.status_code) == (200, 200), (one.text, two.text)
    assert len(calls) == 3  # one of the two ran again
