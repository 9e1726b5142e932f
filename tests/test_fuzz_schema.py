"""Schema fuzzing (issue 14): schemathesis generates requests from the app's own OpenAPI,
valid and invalid, for every operation with every role's key and with none, and sends them
to the real service over HTTP. No 5xx; every answer conforms to the documented status
codes, content type and schema; every error is a problem document; invalid data is never
accepted. Bounded: EXAMPLES per operation, mode and caller, so CI stays fast.

Operations are read from the app at run time, so routes added later are fuzzed too."""

import threading
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.auth import ROLES
from app.core.config import Settings
from app.main import create_app
from tests.live_service import admin_url_of, fresh_database, make_keys, running_service

pytestmark = pytest.mark.fuzz

EXAMPLES = int(
    __import__("os").environ.get("CONSENT_FUZZ_EXAMPLES", "4")
)  # per operation x mode x caller
CALLERS = [*ROLES, "anonymous"]


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """The bulk import's body is NDJSON (one subject per line), sent as it is: bytes (the
    document declares it binary) or text."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    import json

    return json.dumps(value).encode()


SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(env="development")).openapi())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
COUNTS: dict[str, int] = {"requests": 0}
_lock = threading.Lock()


@pytest.fixture(scope="module")
async def fuzz_target(database_url, tmp_path_factory):
    url = await fresh_database(admin_url_of(database_url), "consent_fuzz")
    keys = await make_keys(url, list(ROLES))
    with running_service(
        url, tmp_path_factory.mktemp("fuzz"), mailchimp_webhook_secret="fuzz-webhook-secret"
    ) as (base, _proc):
        yield base, keys


# The bulk import's body is NDJSON, one string to the schema: every byte sequence is "valid"
# text, and bad lines come back as rejected rows in its 200 report (API.md "Bulk").
REPORTS_BAD_ROWS = {"POST /v1/subjects/import"}
# The person's pages answer a bad link with a plain HTML page (issue 12), documented as such.
HTML_PAGES = ("/u/", "/p/", "/c/")


def _problem_document(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400 and not case.path.startswith(HTML_PAGES):
        content_type = response.headers.get("content-type", [""])
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type == "application/problem+json", (response.status_code, content_type)
    return None


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_operation(fuzz_target, label, mode):
    base, keys = fuzz_target
    operation = OPERATIONS[label]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode is GenerationMode.NEGATIVE and label not in REPORTS_BAD_ROWS:
        checks.append(negative_data_rejection)
    session = requests.Session()

    for caller in CALLERS:
        headers = keys.get(caller, {})

        @settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), **headers}
            response = case.call(base_url=base, session=session, timeout=30)
            with _lock:
                COUNTS["requests"] += 1
            case.validate_response(response, checks=checks, additional_checks=[_problem_document])

        try:
            run()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            # No parameter or body can be made invalid (e.g. GET /healthz): nothing to fuzz.


def test_fuzz_report(fuzz_target, capsys):
    """Runs last in this module: the counts for the closing note."""
    with capsys.disabled():
        print(
            f"\nschema fuzzing: {len(OPERATIONS)} operations x 2 modes x {len(CALLERS)} callers"
            f" x up to {EXAMPLES} examples; {COUNTS['requests']} requests sent"
        )
