"""Guard rails, in the manner of polar's `scripts/linters`: every module under app/ is walked
(recursively, so a new folder is covered the day it appears), each rule has an allow-list
of paths that may do what it forbids, and a single line may be excused only explicitly,
with its reason: `# guard: allow-subject-read (why)`.

Rule `subject-read`: outside the data layer nothing reads subject rows itself (no SQL
toolkit, no table models, no session queries, no SQL naming the subjects table), and
nowhere outside its own module is a subject-listing service called. Everything that
hands personal data out goes through `app.services.gate.decisions` (DOMAIN.md, "The processing
decision"). Rule `no-commit`: services never commit (the request owns its commit point).
"""

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"

# Paths (relative to the repository) that may touch the database directly, and why.
DATA_LAYER = {
    "app/services/": "the services hold the rules and the queries",
    "app/models/": "the tables themselves",
    "app/core/": "engine, sessions, key lookup and idempotency records",
    "app/main.py": "builds the engine and the sessionmaker",
    "app/background.py": "owns the sessions of its background tasks",
    "app/cli/": "the command line's own transaction and migrations",
}
# Services that list subjects without the gate. Calling one needs a reason on the line.
SUBJECT_LISTING = {
    "app.services.subjects.records": {"list_subjects"},
    "app.services.subjects.search": {"find_people"},  # the console's search for a person
}
TABLES = {
    "Subject",
    "LawfulBasisRecord",
    "ConsentState",
    "ConsentEvent",
    "Objection",
    "MarketingOptOut",
    "Decision",
    "AuditEntry",
    "RightsRequest",
}
SESSION_CALLS = {"execute", "scalars", "scalar", "get", "add", "stream", "exec", "run_sync"}
SUBJECTS_SQL = re.compile(r"\b(from|join|update|into)\s+subjects\b", re.IGNORECASE)
ESCAPE = re.compile(r"#\s*guard:\s*allow-subject-read\s*\((?P<why>[^)]*)\)")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def python_files(root: Path) -> Iterator[Path]:
    """Every module under root/app, at any depth."""
    yield from sorted((root / "app").rglob("*.py"))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _in_data_layer(rel: str) -> bool:
    return any(rel == allowed or rel.startswith(allowed) for allowed in DATA_LAYER)


def _module_name(rel: str) -> str:
    return rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _dotted(node: ast.AST) -> str | None:
    """`a.b.c` for an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _listing_refs(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every use (call, reference or import) of a subject-listing service, however imported."""
    listing = {f"{module}.{name}" for module, names in SUBJECT_LISTING.items() for name in names}
    aliases: dict[str, str] = {}  # local name -> fully qualified name
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                qualified = f"{node.module}.{alias.name}"
                aliases[alias.asname or alias.name] = qualified
                if qualified in listing:
                    yield node.lineno, f"imports the subject-listing service {qualified}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and not isinstance(
            getattr(node, "ctx", None), ast.Store
        ):
            dotted = _dotted(node)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            qualified = ".".join(p for p in (aliases.get(head, head), rest) if p)
            if qualified in listing and (isinstance(node, ast.Attribute) or head in aliases):
                yield node.lineno, f"uses the subject-listing service {qualified}"


def _direct_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in ("sqlalchemy", "sqlmodel", "asyncpg"):
                yield node.lineno, f"imports {node.module}"
            for alias in node.names:
                if node.module.startswith("app.models") and alias.name in TABLES:
                    yield node.lineno, f"imports the table {alias.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("sqlalchemy", "sqlmodel", "asyncpg"):
                    yield node.lineno, f"imports {a.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SESSION_CALLS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("session", "db", "conn", "connection")
        ):
            yield node.lineno, f"calls {node.func.value.id}.{node.func.attr}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SUBJECTS_SQL.search(node.value)
        ):
            yield node.lineno, "has SQL that reads the subjects table"


def subject_read_violations(path: Path, root: Path, source: str | None = None) -> list[Violation]:
    rel = _relative(path, root)
    source = path.read_text() if source is None else source
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    if not _in_data_layer(rel):
        found += _direct_reads(tree)
    if _module_name(rel) not in SUBJECT_LISTING:
        found += _listing_refs(tree)
    violations = []
    for line, message in sorted(set(found)):
        escape = ESCAPE.search(lines[line - 1]) if 0 < line <= len(lines) else None
        if escape is not None and escape.group("why").strip():
            continue
        violations.append(Violation(rel, line, message))
    return violations


def scan(root: Path) -> list[Violation]:
    return [v for path in python_files(root) for v in subject_read_violations(path, root)]


# The tree as it is.


def test_nothing_outside_the_data_layer_reads_subjects_itself():
    files = list(python_files(ROOT))
    assert any("/routers/" in f.as_posix() for f in files), "nothing scanned"
    assert [str(v) for v in scan(ROOT)] == []


def test_every_listed_subject_listing_service_exists():
    # A rename must not leave the guard watching a name that no longer exists.
    for module, names in SUBJECT_LISTING.items():
        loaded = importlib.import_module(module)
        assert all(callable(getattr(loaded, name, None)) for name in names), module


def test_services_never_commit():
    offenders = []
    for path in python_files(ROOT):
        if not _relative(path, ROOT).startswith("app/services/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "commit"
            ):
                offenders.append(f"{_relative(path, ROOT)}:{node.lineno}")
    assert offenders == []


# The guard itself: it must catch what it is for.


def _check(rel: str, source: str) -> list[str]:
    return [v.message for v in subject_read_violations(ROOT / rel, ROOT, source)]


def test_it_catches_a_router_that_queries():
    source = (
        "from sqlalchemy import select\nfrom app.models.subject import Subject\n"
        "async def h(session):\n    return await session.execute(select(Subject))\n"
    )
    assert _check("app/routers/bad.py", source) == [
        "imports sqlalchemy",
        "imports the table Subject",
        "calls session.execute",
    ]
    raw = "Q = 'SELECT email FROM subjects WHERE category = :c'\n"
    assert _check("app/routers/bad.py", raw) == ["has SQL that reads the subjects table"]


LISTING_CALLS = {
    "module": (
        "from app.services.subjects import records\n"
        "async def h(session):\n"
        "    return await records.list_subjects(session, email=None)\n"
    ),
    "aliased module": (
        "from app.services.subjects import records as people\n"
        "async def h(session):\n"
        "    return await people.list_subjects(session)\n"
    ),
    "dotted import": (
        "import app.services.subjects.records\n"
        "async def h(session):\n"
        "    return await app.services.subjects.records.list_subjects(session)\n"
    ),
    "function": (
        "from app.services.subjects.records import list_subjects as everyone\n"
        "async def h(session):\n"
        "    return await everyone(session)\n"
    ),
}


def test_it_catches_a_router_calling_a_subject_listing_service():
    for style, source in LISTING_CALLS.items():
        problems = _check("app/routers/audiences.py", source)
        assert any("app.services.subjects.records.list_subjects" in p for p in problems), style


def test_it_walks_every_folder_and_services_too(tmp_path):
    nested = tmp_path / "app" / "web" / "pages" / "export.py"
    nested.parent.mkdir(parents=True)
    nested.write_text(LISTING_CALLS["module"])
    service = tmp_path / "app" / "services" / "sync" / "audience.py"
    service.parent.mkdir(parents=True)
    service.write_text(LISTING_CALLS["function"])
    (tmp_path / "app" / "services" / "subjects").mkdir()
    (tmp_path / "app" / "services" / "subjects" / "records.py").write_text(
        "async def list_subjects(session):\n    return await session.execute('x')\n"
    )
    found = scan(tmp_path)
    assert {v.path for v in found} == {"app/web/pages/export.py", "app/services/sync/audience.py"}


def test_an_escape_needs_its_reason_on_the_line():
    call = "    return await subjects.list_subjects(session)"
    head = "from app.services.subjects import records as subjects\nasync def h(session):\n"
    excused = head + call + "  # guard: allow-subject-read (the CRM's own lookup)\n"
    assert _check("app/routers/x.py", excused) == []
    for bare in ("  # guard: allow-subject-read", "  # guard: allow-subject-read ()"):
        assert _check("app/routers/x.py", head + call + bare + "\n"), bare
    elsewhere = head + "    # guard: allow-subject-read (on the wrong line)\n" + call + "\n"
    assert _check("app/routers/x.py", elsewhere)
