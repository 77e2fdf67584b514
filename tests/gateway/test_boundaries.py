"""The gateway imports no service's code: it talks to the services over gRPC and shares only the
generated contracts and the shared runtime (services/mesh), like the services themselves."""

import ast
from pathlib import Path
from typing import get_args

from gateway.admin_models import ACTION_TYPES, Slot
from services.mesh.tenant_rules import KNOWN_ACTION_TYPES, SLOT_NAMES

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
SERVICES = ("orchestrator", "context", "retrieval", "llm", "speech")
FORBIDDEN = tuple(f"services.{name}" for name in SERVICES)


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement names, with its line: `import a.b` -> a.b,
    `from a import b` -> a.b (b may be a module: `from services import llm`)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN)


def test_the_check_recognises_every_form_of_import() -> None:
    source = (
        "import services.llm.engine\n"
        "from services.orchestrator.actions.registry import REGISTRY\n"
        "from services import speech\n"
        "if True:\n    import services.context as context\n"
        "def f():\n    from services.retrieval import stores\n"
        "from services.mesh import errors\n"
        "import services.llmish\n"
    )
    lines = {line for line, module in _imported(ast.parse(source)) if _forbidden(module)}
    assert lines == {1, 2, 3, 5, 7}


def test_no_gateway_module_imports_a_services_code() -> None:
    files = sorted(GATEWAY.rglob("*.py"))
    assert len(files) > 10  # the gateway's modules, routes included
    offences = [
        f"{path.relative_to(GATEWAY.parent)}:{line} imports {module}"
        for path in files
        for line, module in _imported(ast.parse(path.read_text(), str(path)))
        if _forbidden(module)
    ]
    assert offences == []


def test_the_gateway_validates_with_the_platforms_lists() -> None:
    assert set(ACTION_TYPES) == KNOWN_ACTION_TYPES
    assert get_args(Slot) == SLOT_NAMES
