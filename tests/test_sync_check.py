"""`consent-api sync mailchimp|surveymonkey --check`: the credentials and the list tried
once against the fake APIs on 127.0.0.1, one line saying what was found or what is wrong,
exit 0 or 1. The real command runs in a subprocess; it needs no database."""

import os
from pathlib import Path

import pytest

from tests.fakes.mailchimp import FakeMailchimp
from tests.fakes.surveymonkey import FakeSurveymonkey
from tests.sync_support import free_port, serve  # noqa: F401 - fixture
from tests.test_cli import run_cli

LIST = "a1b2c3d4e5"
SM_LIST = "4321"


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_DATA_DIR"] = str(tmp_path / "data")
    env.update({f"CONSENT_{k.upper()}": v for k, v in settings.items()})
    return env


def _one_line(stream: str) -> str:
    lines = stream.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stream, stream
    return lines[0]


@pytest.fixture
def mailchimp(serve, tmp_path):
    fake = FakeMailchimp(list_ids=(LIST,))
    fake.names[LIST] = "Customers"
    url = serve(fake.app)

    def env(**overrides: str) -> dict[str, str]:
        settings = {
            "mailchimp_api_key": fake.api_key,
            "mailchimp_list_id": LIST,
            "mailchimp_base_url": f"{url}/3.0",
            **overrides,
        }
        return _env(tmp_path, **{k: v for k, v in settings.items() if v})

    return fake, env


def test_mailchimp_check_says_ok_with_the_list_name_and_members(mailchimp):
    fake, env = mailchimp
    for i in range(3):
        fake.add_by_hand(LIST, f"member-{i}@example.com")
    fake.add_by_hand(LIST, "gone@example.com", status="unsubscribed")
    r = run_cli("sync", "mailchimp", "--check", env=env())
    assert r.returncode == 0, r.stderr
    assert _one_line(r.stdout) == "ok: list Customers, 3 members"
    # Once each, nothing written: the key, then the list.
    assert [(c.method, c.path) for c in fake.faults.calls] == [
        ("GET", "/3.0/ping"),
        ("GET", f"/3.0/lists/{LIST}"),
    ]


def test_mailchimp_check_names_what_is_wrong_in_one_line(mailchimp):
    fake, env = mailchimp
    bad_key = run_cli("sync", "mailchimp", "--check", env=env(mailchimp_api_key="wrong-us99"))
    assert bad_key.returncode == 1 and bad_key.stdout == ""
    line = _one_line(bad_key.stderr)
    assert "HTTP 401" in line and "CONSENT_MAILCHIMP_API_KEY" in line
    assert "wrong-us99" not in line and fake.api_key not in line

    unknown = run_cli("sync", "mailchimp", "--check", env=env(mailchimp_list_id="nosuchlist"))
    line = _one_line(unknown.stderr)
    assert unknown.returncode == 1
    assert "HTTP 404" in line and "`nosuchlist`" in line and "CONSENT_MAILCHIMP_LIST_ID" in line

    nowhere = f"http://127.0.0.1:{free_port()}/3.0"
    away = run_cli("sync", "mailchimp", "--check", env=env(mailchimp_base_url=nowhere))
    line = _one_line(away.stderr)
    assert away.returncode == 1 and "cannot reach 127.0.0.1:" in line

    missing = run_cli("sync", "mailchimp", "--check", env=env(mailchimp_list_id=""))
    line = _one_line(missing.stderr)
    assert missing.returncode == 1 and "CONSENT_MAILCHIMP_LIST_ID" in line

    fake.faults.fail_next(1, 503)
    down = run_cli("sync", "mailchimp", "--check", env=env())
    assert down.returncode == 1 and "HTTP 503" in _one_line(down.stderr)


def test_check_goes_alone(mailchimp):
    _, env = mailchimp
    r = run_cli("sync", "mailchimp", "--check", "--once", env=env())
    assert r.returncode == 1 and "--check goes alone" in _one_line(r.stderr)


def test_surveymonkey_check(serve, tmp_path):
    fake = FakeSurveymonkey(list_ids=(SM_LIST,))
    fake.names[SM_LIST] = "Panel"
    fake.add("one@example.com")
    fake.add("two@example.com")
    fake.add("out@example.com", status="optout")
    url = serve(fake.app)

    def env(**overrides: str) -> dict[str, str]:
        base = {
            "surveymonkey_access_token": fake.token,
            "surveymonkey_contact_list_id": SM_LIST,
            "surveymonkey_base_url": f"{url}/v3",
        }
        return _env(tmp_path, **{**base, **overrides})

    r = run_cli("sync", "surveymonkey", "--check", env=env())
    assert r.returncode == 0, r.stderr
    assert _one_line(r.stdout) == "ok: contact list Panel, 2 contacts"
    assert all(c.method == "GET" for c in fake.faults.calls)

    bad = run_cli("sync", "surveymonkey", "--check", env=env(surveymonkey_access_token="nope"))
    line = _one_line(bad.stderr)
    assert bad.returncode == 1 and "HTTP 401" in line
    assert "CONSENT_SURVEYMONKEY_ACCESS_TOKEN" in line

    unknown = run_cli("sync", "surveymonkey", "--check", env=env(surveymonkey_contact_list_id="9"))
    line = _one_line(unknown.stderr)
    assert unknown.returncode == 1 and "CONSENT_SURVEYMONKEY_CONTACT_LIST_ID" in line
