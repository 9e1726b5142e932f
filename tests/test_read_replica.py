"""CONSENT_READ_DATABASE_URL: listings and reports read from the replica's engine, while
writes (and the gate) stay on the primary. A second database stands in for the replica."""

import httpx

from app.core.config import Settings
from app.core.db import create_engine, create_read_engine
from app.main import create_app
from tests.conftest import new_subject
from tests.test_partitions import own_database  # noqa: F401 - fixture


async def test_reads_that_may_lag_go_to_the_read_engine(
    engine,
    conn,
    test_settings,
    make_key,
    own_database,
):
    auditor = await make_key("auditor")
    crm = await make_key("crm")
    settings = Settings(**{**test_settings.model_dump(), "read_database_url": own_database})
    replica = create_read_engine(settings, engine)
    assert replica is not engine
    assert create_read_engine(test_settings, engine) is engine  # unset: the primary
    app = create_app(settings, engine=engine, session_bind=conn, read_engine=replica)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as c:
            r = await c.post("/v1/subjects", json=new_subject(), headers=crm)
            assert r.status_code == 201  # written on the primary
            sid = r.json()["id"]
            d = await c.post(
                "/v1/decisions", json={"subject_id": sid, "purpose": "surveys"}, headers=crm
            )
            assert d.status_code == 200
            # The stand-in replica never saw these writes: its listings are empty.
            events = await c.get("/v1/audit/events", headers=auditor)
            assert events.status_code == 200 and events.json()["items"] == [], events.text
            stored = await c.get("/v1/decisions", params={"subject_id": sid}, headers=auditor)
            assert stored.status_code == 200 and stored.json()["items"] == []
            primary = create_app(test_settings, engine=engine, session_bind=conn)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=primary), base_url="http://test"
            ) as p:
                seen = await p.get("/v1/decisions", params={"subject_id": sid}, headers=auditor)
                assert seen.status_code == 200, seen.text
                assert len(seen.json()["items"]) == 1
    finally:
        await replica.dispose()
    assert isinstance(create_engine(own_database, settings), type(engine))
