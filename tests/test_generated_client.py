"""A Python client generated from the committed openapi/openapi.json with
openapi-python-client (no warning, no operation dropped), imported, and used against a live
server on 127.0.0.1 as a CRM would: a subject, a consent, a decision, a basis with a date, a
rights request received on a date followed through identity verification to completion.
Checked in the stored rows, not only in the answers."""

import datetime
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.live_service import raw_connection
from tests.test_consent import NOTICE

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "openapi" / "openapi.json"
CONFIG = ROOT / "openapi" / "openapi-python-client.yaml"
PACKAGE = "consent_api_client"
UK = datetime.timezone(datetime.timedelta(0))  # GMT: the dates below are in winter


def _generator() -> str:
    beside = Path(sys.executable).parent / "openapi-python-client"
    found = str(beside) if beside.exists() else shutil.which("openapi-python-client")
    if found is None:
        pytest.skip("openapi-python-client is not installed (pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Any:
    """The client package, generated into a temporary directory and imported."""
    where = tmp_path_factory.mktemp("client")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        [
            _generator(),
            *("generate", "--path", str(SPEC), "--output-path", str(where / PACKAGE)),
            *("--meta", "none", "--config", str(CONFIG)),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "warning" not in output.lower(), output  # nothing skipped, nothing dropped
    sys.path.insert(0, str(where))
    try:
        package = importlib.import_module(PACKAGE)
        yield package
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_every_operation_is_generated_and_imports(generated):
    """One module per operation of the document, each importable (no bad code)."""
    import json

    spec = json.loads(SPEC.read_text())
    operations = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    api = importlib.import_module(f"{PACKAGE}.api")
    modules = {
        name.rsplit(".", 1)[-1]
        for _, name, is_pkg in pkgutil.walk_packages(api.__path__, f"{PACKAGE}.api.")
        if not is_pkg
    }
    assert modules == operations
    for name in modules:  # every module imports (a missing name in a signature would not)
        group = next(g for g in pkgutil.iter_modules(api.__path__) if _has(api, g.name, name))
        assert hasattr(importlib.import_module(f"{PACKAGE}.api.{group.name}.{name}"), "sync")


def _has(api: Any, group: str, name: str) -> bool:
    return (Path(api.__path__[0]) / group / f"{name}.py").exists()


def test_the_generated_code_names_nothing_undefined(generated):
    """Names used but never defined or imported (bad code the generator can emit for some
    documents: a body under two media types did, before the document declared one)."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed beside the interpreter")
    where = Path(generated.__file__).parent
    run = subprocess.run(
        [str(ruff), "check", "--isolated", "--no-cache", "--select", "F821,F822,F823", str(where)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def _models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


def _ok(response: Any, status: int) -> Any:
    assert response.status_code == status, response.content
    return response.parsed


async def _row(url: str, sql: str, *args: Any) -> Any:
    con = await raw_connection(url)
    try:
        return await con.fetchrow(sql, *args)
    finally:
        await con.close()


def _client(generated: Any, base: str, headers: dict[str, str]) -> Any:
    token = headers["Authorization"].removeprefix("Bearer ")
    return generated.AuthenticatedClient(
        base_url=base, token=token, raise_on_unexpected_status=True
    )


async def test_public_and_keyed_operations(generated, live_server):
    anonymous = generated.Client(base_url=live_server.url)
    jwks = _ok(_api("accountability.list_signing_keys").sync_detailed(client=anonymous), 200)
    assert jwks.keys and jwks.keys[0].additional_properties["alg"] == "ES256"
    wrong = generated.AuthenticatedClient(base_url=live_server.url, token="cak_" + "x" * 43)
    refused = _api("catalogues.list_purposes").sync_detailed(client=wrong)
    assert refused.status_code == 401 and refused.parsed.type_.endswith(":unauthorized")


async def test_a_crm_works_through_the_generated_client(generated, live_server):
    crm = _client(generated, live_server.url, await live_server.key("crm"))
    m = _models()
    email = f"generated-{uuid.uuid4().hex[:8]}@example.com"
    subject = _ok(
        _api("subjects.create_subject").sync_detailed(
            client=crm,
            body=m.SubjectCreate(
                email=email,
                name="Grace Hopper",
                category="customer_contact",
                source="enquiry",
                company="Compilers Ltd",
            ),
        ),
        201,
    )
    sid = subject.id
    row = await _row(
        live_server.database_url, "SELECT email, name FROM subjects WHERE id = $1", sid
    )
    assert (row["email"], row["name"]) == (email, "Grace Hopper")

    await _consent_and_decision(crm, m, live_server.database_url, sid)
    await _basis_with_a_date(crm, m, live_server.database_url, sid)
    await _rights_request(crm, m, live_server.database_url, sid)


async def _consent_and_decision(crm: Any, m: Any, url: str, sid: uuid.UUID) -> None:
    event = _ok(
        _api("consent.create_consent_event").sync_detailed(
            client=crm,
            body=m.ConsentEventCreate(
                subject_id=sid,
                purpose="content_subscriptions",
                action=m.ConsentEventCreateAction.GIVEN,
                method=m.ConsentEventCreateMethodType0.WEB_FORM,
                policy_version="1",
                notice_text=NOTICE,
            ),
        ),
        201,
    )
    stored = await _row(url, "SELECT subject_id, purpose, action, method FROM consent_events"
                             " WHERE id = $1", event.id)  # fmt: skip
    assert tuple(stored) == (sid, "content_subscriptions", "given", "web_form")
    state = await _row(url, "SELECT status FROM consent_state WHERE subject_id = $1"
                            " AND purpose = 'content_subscriptions'", sid)  # fmt: skip
    assert state["status"] == "given"
    # Whatever the gate answers now: the decision comes back whole, and is stored as answered.
    decision = _ok(
        _api("decisions.create_decision").sync_detailed(
            client=crm, body=m.DecisionRequest(subject_id=sid, purpose="content_subscriptions")
        ),
        200,
    )
    assert isinstance(decision.allowed, bool) and isinstance(decision.decided_at, datetime.datetime)
    assert decision.subject_id == sid and decision.purpose == "content_subscriptions"
    assert decision.allowed == (decision.reasons == [])
    kept = await _row(url, "SELECT subject_id, purpose, allowed, basis, reasons FROM decisions"
                           " WHERE id = $1", decision.id)  # fmt: skip
    assert (kept["subject_id"], kept["purpose"], kept["allowed"]) == (
        sid, "content_subscriptions", decision.allowed)  # fmt: skip
    assert kept["basis"] == decision.basis
    assert list(kept["reasons"]) == [r.value for r in decision.reasons]


async def _basis_with_a_date(crm: Any, m: Any, url: str, sid: uuid.UUID) -> None:
    """A date where the document says a date will do (contract_end: through that day)."""
    response = _api("lawful_bases.set_basis").sync_detailed(
        subject_id=sid,
        purpose="account_management",
        client=crm,
        body=m.LawfulBasisSet(
            basis=m.LawfulBasisSetBasis.CONTRACT,
            contract_ref="C-42",
            contract_end=datetime.date(2030, 1, 31),
        ),
    )
    assert response.status_code in (200, 201), response.content
    stored = await _row(url, "SELECT basis, contract_end FROM lawful_bases WHERE subject_id = $1"
                             " AND purpose = 'account_management'", sid)  # fmt: skip
    assert stored["basis"] == "contract"
    assert stored["contract_end"] == datetime.datetime(2030, 2, 1, tzinfo=UK)


async def _rights_request(crm: Any, m: Any, url: str, sid: uuid.UUID) -> None:
    received = datetime.date(datetime.date.today().year - 1, 12, 1)  # a letter entered late
    created = _ok(
        _api("rights_requests.create_rights_request").sync_detailed(
            client=crm,
            body=m.RightsRequestCreate(
                type_=m.RightsRequestCreateType.RECTIFICATION, subject_id=sid, received_at=received
            ),
        ),
        201,
    )
    assert created.status.value == "received"
    verified = _ok(
        _api("rights_requests.verify_rights_request_identity").sync_detailed(
            created.id,
            client=crm,
            body=m.VerifyIdentity(method=m.VerifyIdentityMethod.EMAIL, note="replied from it"),
        ),
        200,
    )
    assert verified.status.value == "identity_verified"
    done = _ok(
        _api("rights_requests.complete_rights_request").sync_detailed(
            created.id, client=crm, body=m.Complete(changes=m.SubjectUpdate(name="Grace B. Hopper"))
        ),
        200,
    )
    assert done.status.value == "completed"
    read = _ok(
        _api("rights_requests.get_rights_request").sync_detailed(created.id, client=crm), 200
    )
    actions = [item.additional_properties["action"] for item in read.history]
    assert read.status.value == "completed"
    assert actions == ["received", "identity_verified", "completed"], actions
    stored = await _row(url, "SELECT status, identity_method, received_at, completed_at"
                             " FROM rights_requests WHERE id = $1", created.id)  # fmt: skip
    assert (stored["status"], stored["identity_method"]) == ("completed", "email")
    assert stored["received_at"] == datetime.datetime(received.year, 12, 1, tzinfo=UK)
    assert stored["completed_at"] is not None
    name = await _row(url, "SELECT name FROM subjects WHERE id = $1", sid)
    assert name["name"] == "Grace B. Hopper"
