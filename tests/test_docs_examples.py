"""The user documentation's examples run against a live `consent-api serve`, and the
documentation stays clean of what a reader cannot follow.

The examples' rule (written for readers in docs/getting-started.md, "About the examples"):

- Examples are the fenced blocks tagged `bash` in README.md, docs/getting-started.md and
  docs/crm.md (blocks tagged `sh` or `text` are shown, not run).
- Each line of such a block is blank, a comment, a `curl` call (continued by a trailing
  backslash), or `NAME=$(consent-api ...)`, which runs the command line against the live
  server's database and keeps its output in `$NAME`.
- The line right after each call says what it answers: `# → STATUS [JSON] [NAME=.path ...]`.
  STATUS is the status code; JSON, an object whose every field the answer must have with
  that value (objects compared field by field in the same way, anything else for equality);
  `NAME=.path` keeps a value of the answer (`.id`, `.items.0.id`) in `$NAME` for later calls.
- `$BASE` is the live server's address and `$KEY` a `crm` key (until a block sets KEY).
  A file's blocks run in order, in one environment, against a database of their own.

A call is expanded by bash itself (quotes, `$VAR`, `\\` continuations, `set -u`), then made
with httpx from the arguments bash produced: curl's `-H`, `-d`, `-X` and `-s`/`-S`, nothing
else, so the examples stay plain and the test needs no curl binary.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_service import admin_url_of, fresh_database, make_keys, running_service
from tests.pg_server import free_port

ROOT = Path(__file__).resolve().parents[1]
RUN = ("README.md", "docs/getting-started.md", "docs/crm.md")
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
EXPECT = re.compile(r"^# → (\d{3})(?:\s+(\{.*\}))?((?:\s+[A-Z][A-Z0-9_]*=\.[\w.]+)*)\s*$")
CAPTURE = re.compile(r"([A-Z][A-Z0-9_]*)=\.([\w.]+)")
CLI_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=\$\(consent-api (.*)\)$")
ISSUE_NUMBER = re.compile(r"(?i)\bissues?\s*#?\s*\d+|(?<![&\w/])#\d+\b")
OUTSIDE_LINKS = re.compile(r"DOMAIN\.md|API\.md|ARCHITECTURE\.md|\.\./shared|/shared/")
README_FIRST = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . "
    "&& consent-api serve"
)
README_TESTS = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt "
    "-e '.[dev]' && pytest"
)


@dataclass
class Call:
    source: str  # file:line, for messages
    command: str  # the curl command as written (continuations joined by bash later)
    status: int
    expected: dict[str, Any] | None
    captures: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Assignment:
    source: str
    name: str
    arguments: str  # what follows `consent-api `


Step = Call | Assignment


def blocks(path: str, tag: str = "bash") -> list[tuple[int, str]]:
    """The fenced blocks tagged `tag`, with the line number of their first line."""
    text = (ROOT / path).read_text()
    found = []
    for match in FENCE.finditer(text):
        if match[1] == tag:
            found.append((text.count("\n", 0, match.start(2)) + 1, match[2]))
    return found


def steps_of(path: str) -> list[Step]:
    """The calls and assignments of a file's bash blocks, with what each call answers."""
    steps: list[Step] = []
    for first, body in blocks(path):
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line, where = lines[i].strip(), f"{path}:{first + i}"
            i += 1
            if not line or (line.startswith("#") and not line.startswith("# →")):
                continue
            if assigned := CLI_ASSIGNMENT.match(line):
                steps.append(Assignment(where, assigned[1], assigned[2]))
                continue
            assert line.startswith("curl "), f"{where}: not a curl call or an assignment: {line}"
            command = [line]
            while command[-1].endswith("\\"):
                assert i < len(lines), f"{where}: the call's last line ends with a backslash"
                command.append(lines[i].strip())
                i += 1
            expect = EXPECT.match(lines[i].strip()) if i < len(lines) else None
            assert expect, f"{where}: the call must be followed by `# → STATUS [JSON] [NAME=.path]`"
            i += 1
            steps.append(
                Call(
                    where,
                    "\n".join(command),
                    int(expect[1]),
                    json.loads(expect[2]) if expect[2] else None,
                    CAPTURE.findall(expect[3] or ""),
                )
            )
    return steps


def bash_words(command: str, env: dict[str, str]) -> list[str]:
    """The arguments bash would hand to curl for `command` (quotes and variables expanded;
    an unset variable is an error)."""
    script = "set -u\nwords() { printf '%s\\0' \"$@\"; }\nwords" + command.removeprefix("curl")
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"bash could not expand {command!r}: {out.stderr}"
    return out.stdout.split("\0")[:-1]


def request_of(words: list[str]) -> tuple[str, str, dict[str, str], str | None]:
    """curl's meaning of the few options the docs use: method, URL, headers, body."""
    method, url, headers, body = None, None, {}, None
    items = iter(words)
    for word in items:
        if word in ("-s", "-S", "-sS", "--silent", "--show-error"):
            continue
        if word in ("-H", "--header"):
            name, _, value = next(items).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data", "--data-raw"):
            assert body is None, "one -d per call"
            body = next(items)
        elif word in ("-X", "--request"):
            method = next(items)
        elif word.startswith("-"):
            raise AssertionError(f"curl option {word} is not one the docs may use")
        else:
            assert url is None, f"two URLs: {url} and {word}"
            url = word
    assert url, "no URL"
    if body is not None and not any(h.lower() == "content-type" for h in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # as curl sends
    return method or ("POST" if body is not None else "GET"), url, headers, body


def contains(answer: Any, expected: Any, path: str = "") -> list[str]:
    """Where `answer` differs from `expected` (objects: the expected fields only)."""
    if isinstance(expected, dict):
        if not isinstance(answer, dict):
            return [f"{path or '.'}: expected an object, got {answer!r}"]
        problems = []
        for key, value in expected.items():
            if key not in answer:
                problems.append(f"{path}.{key}: missing")
            else:
                problems += contains(answer[key], value, f"{path}.{key}")
        return problems
    return [] if answer == expected else [f"{path or '.'}: {answer!r}, expected {expected!r}"]


def value_at(answer: Any, path: str) -> Any:
    for part in path.split("."):
        answer = answer[int(part)] if isinstance(answer, list) else answer[part]
    return answer


@dataclass
class Live:
    base: str
    database_url: str | None  # None: the embedded PostgreSQL in `data_dir`
    data_dir: Path
    crm_key: str


@pytest.fixture
async def live(database_url: str, tmp_path: Path):
    url = await fresh_database(admin_url_of(database_url), "consent_docs")
    keys = await make_keys(url, ["crm"])
    with running_service(url, tmp_path) as (base, _proc):
        key = keys["crm"]["Authorization"].removeprefix("Bearer ")
        yield Live(base, url, tmp_path, key)


@contextlib.contextmanager
def served_as_the_readme_says(folder: Path) -> Iterator[str]:
    """`consent-api serve` with nothing set, as the README's first command ends: the
    embedded PostgreSQL in `.consent-data/` of the folder it runs in. Yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    log = (folder / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _ready(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start: see " + log.name)
            time.sleep(0.3)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def shell_env(live: Live) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    if os.environ.get("CONSENT_DB_PREPARED_STATEMENTS"):  # behind the suite's PgBouncer run
        env["CONSENT_DB_PREPARED_STATEMENTS"] = os.environ["CONSENT_DB_PREPARED_STATEMENTS"]
    return env | {"BASE": live.base, "KEY": live.crm_key}


def run_cli(live: Live, step: Assignment, env: dict[str, str]) -> str:
    """`NAME=$(consent-api ...)` as a reader runs it, the command line pointed at the live
    server's database."""
    script = (
        f'consent-api() {{ "{sys.executable}" -m app.cli "$@"; }}\nconsent-api {step.arguments}'
    )
    cli_env = env | {"CONSENT_DATA_DIR": str(live.data_dir)}
    if live.database_url is not None:
        cli_env["CONSENT_DATABASE_URL"] = live.database_url
    out = subprocess.run(
        ["bash", "-c", script], env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"{step.source}: {out.stderr}"
    return out.stdout.rstrip("\n")


def run_steps(live: Live, steps: list[Step]) -> list[tuple[Call, Any]]:
    env = shell_env(live)
    answers = []
    with httpx.Client(timeout=30) as client:
        for step in steps:
            if isinstance(step, Assignment):
                env[step.name] = run_cli(live, step, env)
                continue
            method, url, headers, body = request_of(bash_words(step.command, env))
            r = client.request(method, url, headers=headers, content=body)
            assert r.status_code == step.status, f"{step.source}: {r.status_code} {r.text}"
            json_answer = re.match(
                r"application/(problem\+)?json", r.headers.get("content-type", "")
            )
            answer = r.json() if json_answer else r.text
            if step.expected is not None:
                problems = contains(answer, step.expected)
                assert not problems, f"{step.source}: {problems}; answer: {r.text}"
            for name, path in step.captures:
                env[name] = str(value_at(answer, path))
            answers.append((step, answer))
    return answers


@pytest.mark.parametrize("path", RUN[1:])
async def test_the_guides_examples_answer_as_written(live: Live, path: str) -> None:
    steps = steps_of(path)
    assert sum(isinstance(s, Call) for s in steps) >= 10, f"{path}: where are its examples?"
    run_steps(live, steps)


@pytest.mark.pg_independent  # its own embedded PostgreSQL, as a newcomer's
def test_the_readme_first_decision_is_allowed(tmp_path: Path) -> None:
    """The README's calls, verbatim, against `consent-api serve` started with nothing set
    (the embedded PostgreSQL), the key made with the command line beside it."""
    assert len(blocks("README.md")) == 1, "the first decision is the README's one bash block"
    steps = steps_of("README.md")
    assert len(steps) <= 5, "the README promises at most five calls"
    assert isinstance(steps[0], Assignment) and steps[0].name == "KEY", "it makes its own key"
    with served_as_the_readme_says(tmp_path) as base:
        live = Live(base, None, tmp_path / ".consent-data", "")
        answers = run_steps(live, steps)
    last, answer = answers[-1]
    assert "/v1/decisions" in last.command and answer["allowed"] is True, answer


@pytest.mark.pg_independent
def test_the_readme_commands_are_what_ci_runs() -> None:
    readme = [body.strip() for _, body in blocks("README.md", "sh")]
    assert README_FIRST in readme and README_TESTS in readme
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert README_TESTS in ci, "the README's test command is the line .ci/run runs"


def user_docs() -> list[Path]:
    docs = sorted((ROOT / "docs").rglob("*.md"))
    return [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "mkdocs.yml", *docs]


@pytest.mark.pg_independent
def test_user_docs_cite_no_issue_numbers_and_no_files_outside_the_repository() -> None:
    problems = []
    for path in user_docs():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}"
            if ISSUE_NUMBER.search(line):
                problems.append(f"{where}: an issue number: {line.strip()}")
            if OUTSIDE_LINKS.search(line):
                problems.append(f"{where}: a file outside the repository: {line.strip()}")
    assert not problems, "\n".join(problems)


@pytest.mark.pg_independent
def test_user_docs_link_only_to_files_in_the_repository() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    missing = []
    for path in user_docs():
        for target in link.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (path.parent / target).exists():
                missing.append(f"{path.relative_to(ROOT)}: {target}")
    assert not missing, missing


@pytest.mark.pg_independent
def test_the_examples_rule_catches_a_bad_block(tmp_path: Path) -> None:
    """The rule itself: an expectation is parsed, and a subset check fails loudly."""
    expect = EXPECT.match('# → 201 {"a": {"b": 1}} SUBJECT=.id REQUEST=.items.0.id')
    assert expect and expect[1] == "201" and json.loads(expect[2]) == {"a": {"b": 1}}
    assert CAPTURE.findall(expect[3]) == [("SUBJECT", "id"), ("REQUEST", "items.0.id")]
    assert contains({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == []
    assert contains({"a": {"b": 2}}, {"a": {"b": 1}}) == [".a.b: 2, expected 1"]
    assert contains({"a": [1, 2]}, {"a": [1]}) == [".a: [1, 2], expected [1]"]
    words = bash_words(
        'curl -X PUT -H \'A: b c\' -d "{\\"x\\": \\"$V\\"}" \\\n  $B/p', {"V": "1", "B": "http://h"}
    )
    assert request_of(words) == (
        "PUT",
        "http://h/p",
        {"A": "b c", "Content-Type": "application/x-www-form-urlencoded"},
        '{"x": "1"}',
    )


@pytest.mark.pg_independent
def test_the_reference_names_every_setting_and_command() -> None:
    from app.cli import build_parser
    from app.core.config import Settings

    reference = (ROOT / "docs" / "reference.md").read_text()
    settings = [f"CONSENT_{name.upper()}" for name in Settings.model_fields]
    missing = [name for name in settings if f"`{name}`" not in reference]
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    missing += [f"consent-api {c}" for c in commands if f"`consent-api {c}" not in reference]
    assert not missing, f"docs/reference.md does not name: {missing}"
