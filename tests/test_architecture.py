"""The layout's rules, read from the code's own imports (every import, including those inside
functions and under TYPE_CHECKING): the publish seam is a leaf, no project module imports
itself back, non-public APIs of dependencies appear in notifications/compat.py only, and the
consumer stays readable."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reasonflow", "notifications", "emails")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


MODULES = _project_modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def _imported_names(module: str) -> set[str]:
    """Every module name `module` imports (for `from x import y`: x.y when that is a module)."""
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            names.add(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    names.add(f"{base}.{alias.name}")
    return names


def _project_target(name: str) -> str | None:
    """The project module an import loads (its deepest existing prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = {_project_target(name) for name in _imported_names(module)}
        # A package's __init__ runs on import of its modules, but imports nothing of them here.
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


GRAPH = _graph()


def _closure(start: str) -> tuple[set[str], set[str]]:
    """(project modules reached from `start`, third-party modules they import)."""
    seen, stack, external = set(), [start], set()
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        # Importing a module runs its packages' __init__ too.
        parents = module.split(".")
        for depth in range(1, len(parents)):
            parent = ".".join(parents[:depth])
            if parent in MODULES:
                stack.append(parent)
        for name in _imported_names(module):
            target = _project_target(name)
            if target is None:
                external.add(name)
            else:
                stack.append(target)
    return seen, external


def test_the_publish_seam_reaches_nothing_of_the_socket_runtime():
    reached, external = _closure("notifications.publish")
    assert not {m for m in reached if m.startswith("notifications.realtime")}, reached
    forbidden = ("uvicorn", "websockets", "channels.generic", "channels.consumer")
    assert not {
        name for name in external if name.split(".")[0] in forbidden[:2] or name in forbidden
    }, sorted(external)
    assert not {name for name in external if name.startswith(forbidden[2:])}, sorted(external)


def test_metrics_are_importable_without_the_runtime():
    reached, _ = _closure("notifications.operations.metrics")
    assert not {m for m in reached if m.startswith("notifications.realtime")}, reached


def _cycles() -> list[list[str]]:
    # Tarjan's strongly connected components: any with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
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

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_project_modules():
    assert _cycles() == []


# Names of dependencies' non-public APIs (and the helpers that stepped coroutines by hand before
# they moved to compat): each may appear in notifications/compat.py only, as an attribute, a
# name or a definition. Code elsewhere calls compat's functions instead.
PRIVATE_NAMES = {
    "threadlocal",
    "main_event_loop",
    "main_event_loop_pid",
    "health_check_done",
    "run_on_commit",
    "atomic_blocks",
    "_from_testcase",
    "wrap_database_errors",
    "queries_logged",
    "execute_wrappers",
    "_wrap_close",
    "_get_layer",
    "_layers",
    "_shards",
    "_get_shard",
    "_ensure_redis",
    "_ensure_receiver",
    "_subscribed_to",
    "_pubsub",
    "_receive_message",
    "_get_group_channel_name",
    "_redis",
    "_args",
    "_kwargs",
    "transport",
    "handshake_complete",
    "close_sent",
    "expect_continuation_frame",
    "writable",
    "_messages",
    "_handler_class",
    "read_body",
    "create_request",
    "send_response",
    "load_middleware",
    "_acquired_at_once",
    "_Resumed",
    "get_db_converters",
    "get_col",
    "_do_update",
    "_check",
}
LOCAL_NAMES_ALLOWED = {"transport"}
# Underscore attributes that channels-redis objects have; ours must not reuse the names, so
# that a use of theirs cannot hide behind one of ours.
CHANNELS_REDIS_PRIVATE = {"_lock"}


def _private_uses(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name):
            # A local or parameter is ours whatever its name (the clients' `transport=`
            # option); a dependency's private API is reached as an attribute or an import.
            if node.id in LOCAL_NAMES_ALLOWED:
                continue
            name = node.id
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = node.name
        elif isinstance(node, ast.alias):
            name = node.name.rsplit(".", 1)[-1]
        else:
            continue
        if name in PRIVATE_NAMES or name in CHANNELS_REDIS_PRIVATE:
            found.add(name)
    return found


def test_non_public_apis_appear_in_the_compat_module_only():
    offenders = {
        module: sorted(uses)
        for module, path in MODULES.items()
        if module != "notifications.compat" and (uses := _private_uses(path))
    }
    assert offenders == {}


def test_hand_stepped_coroutines_live_in_the_compat_module_only():
    # Stepping a coroutine by hand: a call of .send(None) on anything.
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"send", "throw"}
                and len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value is None
                and module != "notifications.compat"
            ):
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("module", ["notifications.realtime.consumer"])
def test_the_consumer_module_stays_readable(module):
    assert len(MODULES[module].read_text().splitlines()) <= 300


# The per-user event number is `id` on the wire and `event_id` everywhere in code; these
# are the names it had before, one per module that used it.
RETIRED_EVENT_NUMBER_NAMES = {"sequence", "last_sent", "watch_target", "latest_id"}


def _identifiers(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id, node.lineno
        elif isinstance(node, ast.Attribute):
            yield node.attr, node.lineno
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            yield node.arg, node.lineno
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno  # field names in querysets and admin options


def test_the_event_number_has_one_name():
    offenders = [
        f"{module}:{line} {name}"
        for module, path in MODULES.items()
        for name, line in _identifiers(ast.parse(path.read_text()))
        if name.split("__")[0] in RETIRED_EVENT_NUMBER_NAMES
    ]
    assert offenders == []


def test_no_production_name_looks_like_a_test():
    offenders = [
        f"{module}:{node.lineno} {node.name}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.name.lower().startswith("test")
    ]
    assert offenders == []
