"""Guard rails: routers and integrations never read subject rows themselves (everything
that hands personal data out goes through `app.services.decisions`), and services never
commit (the request owns its one commit point)."""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
TABLES = {
    "Subject",
    "LawfulBasisRecord",
    "ConsentState",
    "Objection",
    "MarketingOptOut",
    "Decision",
    "AuditEntry",
}
SESSION_CALLS = {"execute", "scalars", "scalar", "get", "add", "stream", "exec"}


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (APP / folder).glob("*.py") if p.name != "__init__.py")


def _violations(path: Path, source: str | None = None) -> list[str]:
    tree = ast.parse(path.read_text() if source is None else source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("sqlalchemy") or node.module.startswith("sqlmodel"):
                found.append(f"imports {node.module}")
            for alias in node.names:
                if node.module.startswith("app.models") and alias.name in TABLES:
                    found.append(f"imports the table {alias.name}")
        if isinstance(node, ast.Import):
            found += [f"imports {a.name}" for a in node.names if a.name.startswith("sqlalchemy")]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SESSION_CALLS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "session"
        ):
            found.append(f"calls session.{node.func.attr}")
    return [f"{path.relative_to(APP.parent)}: {v}" for v in found]


def test_routers_and_integrations_do_not_read_subjects_themselves():
    modules = _modules("routers") + _modules("integrations")
    assert modules, "nothing scanned"
    problems = [v for m in modules for v in _violations(m)]
    assert problems == []


def test_the_scan_catches_a_router_that_queries():
    source = (
        "from sqlalchemy import select\nfrom app.models.subject import Subject\n"
        "async def h(session):\n    return await session.execute(select(Subject))\n"
    )
    assert len(_violations(APP / "routers" / "bad.py", source)) == 3


def test_services_never_commit():
    offenders = []
    for path in _modules("services"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "commit"
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
