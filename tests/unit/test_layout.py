"""The package's shape: public import paths stay, no import cycle, leaves stay leaves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "socketsvc"

# What users import, as the docs show it (module, names it must have).
PUBLIC = [
    (
        "socketsvc",
        "handler call notify call_with notify_with RPCError SocketServiceError ServiceUnavailable "
        "CallTimeout RemoteError MethodNotFound InvalidParams HandlerError DatabaseUnavailable "
        "ServiceBusy AccessDenied ProtocolError __version__",
    ),
    ("socketsvc.client", "call notify call_with notify_with close_connections"),
    ("socketsvc.lifecycle", "request_scope close_thread_connections refresh_connections"),
    (
        "socketsvc.tasks",
        "SocketServiceBackend periodic retry RetryPolicy progress get_progress cancel Cancelled "
        "WorkerLost ResultNotStored chain group chord step get_workflow cancel_workflow "
        "WorkflowResult WorkflowDoesNotExist",
    ),
    ("socketsvc.tasks.backend", "SocketServiceBackend"),
    ("socketsvc.admin", "Action Button SocketServiceAdminMixin"),
    ("socketsvc.testing", "InProcess InProcessMixin in_process LiveService LiveServiceMixin"),
    ("socketsvc.testing.pytest_plugin", ""),
    ("socketsvc.contrib.rq", "Job"),
    ("socketsvc.models", "TaskRecord ScheduleRecord DaemonRecord WorkflowRecord"),
    ("socketsvc.conf", "get_config"),
]


@pytest.mark.parametrize(("module", "names"), PUBLIC, ids=[m for m, _ in PUBLIC])
def test_public_paths_import(module: str, names: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in names.split() if not hasattr(imported, name)]
    assert not missing, f"{module} lacks {missing}"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path], top_level: bool) -> set[str]:
    """socketsvc modules that *name* imports (at import time only, when *top_level*)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in modules else base)
            elif (
                isinstance(node, (ast.If, ast.Try, ast.With))
                if top_level
                else hasattr(node, "body")
            ):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(ast.parse(path.read_text()).body)
    return {target for target in found if target in modules and target != name}


def _graph(top_level: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules, top_level) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                strong(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return found


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    assert _cycles(_graph(top_level=False)) == []


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_folders_import_one_way() -> None:
    """No two of the package's folders (or top-level modules) import each other, even
    through a third: the layers of docs/layout.md hold."""
    folders: dict[str, set[str]] = {}
    for name, targets in _graph(top_level=False).items():
        folder = name.split(".")[1] if "." in name else "__init__"
        edges = folders.setdefault(folder, set())
        edges.update(t.split(".")[1] for t in targets if "." in t and t.split(".")[1] != folder)
    for targets in list(folders.values()):
        for target in targets:
            folders.setdefault(target, set())
    assert _cycles(folders) == []


def test_database_vendors_are_a_leaf() -> None:
    """db/vendors knows databases, nothing of the daemon: it imports only the settings."""
    graph = _graph(top_level=False)
    for name, targets in graph.items():
        if name.startswith("socketsvc.db.vendors"):
            outside = {t for t in targets if not t.startswith("socketsvc.db.vendors")}
            assert outside <= {"socketsvc.conf"}, (name, outside)


def test_observation_is_a_leaf() -> None:
    """observe/ is called from everywhere, so it imports nothing of the daemon: the
    protocol's codes, the models and procfs only."""
    graph = _graph(top_level=False)
    allowed = {"socketsvc.protocol", "socketsvc.models", "socketsvc.procfs"}
    for name, targets in graph.items():
        if name.startswith("socketsvc.observe"):
            outside = {t for t in targets if not t.startswith("socketsvc.observe")}
            assert outside <= allowed, (name, outside)


def test_web_processes_do_not_import_the_daemon() -> None:
    """What a web process imports to enqueue and read tasks pulls in no daemon module."""
    graph = _graph(top_level=True)
    web = ["socketsvc", "socketsvc.tasks", "socketsvc.admin", "socketsvc.lifecycle"]
    seen: set[str] = set()
    todo = list(web)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph[name])
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)  # importing a module imports its package first
    daemon_side = sorted(
        name
        for name in seen
        if name.startswith(("socketsvc.server", "socketsvc.process", "socketsvc.tasks.daemon"))
    )
    assert daemon_side == []
