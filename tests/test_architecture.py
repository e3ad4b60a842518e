"""labkit's shape: no import cycles, one registry of protocol views in a fixed order,
Scapy's private names in one module, pinned to requirements.txt's Scapy range."""

import ast
import importlib
import re
from importlib.metadata import version
from pathlib import Path

import pytest

import labkit

ROOT = Path(labkit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_at_import_time(path: Path) -> set[str]:
    """labkit modules a module imports at its top level (not inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # "from pkg import module"
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = {d for d in _imports_at_import_time(path) if d in modules and d != name}
        # importing a.b.c runs a/__init__ and a/b/__init__ first (the importer's own
        # packages are already running: a module inside them is not a cycle)
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        deps |= {".".join(d.split(".")[:i]) for d in set(deps)
                 for i in range(2, d.count(".") + 1)} - own - {name}
        graph[name] = deps
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_finds_known_edges():
    graph = import_graph()   # the checker itself must see imports, or it proves nothing
    assert "labkit.protocols" in graph["labkit.capture.flows"]
    assert "labkit.protocols.base" in graph["labkit.protocols.websocket"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_no_import_cycles_among_labkit_modules():
    assert _cycle(import_graph()) is None


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_every_module_imports_on_its_own(module):
    importlib.import_module(module)


# Which layers each layer may import from (docs/architecture.md draws this picture).
LAYERS = {
    "net": {"net"},
    "protocols": {"protocols"},
    # e.g. HTTPServer reads requests with http_parser; check_host asks net which lab host
    # this thread is on
    "servers": {"servers", "protocols", "net"},
    "capture": {"capture", "protocols", "servers"},
    "views": {"views", "capture", "protocols", "servers", "net"},  # net: a network's plan
    "checks": {"checks", "views", "capture", "protocols", "servers", "net"},
    "tools": {"tools", "capture", "net"},
}
# The one import that goes up, on purpose: wire.table(), wire.ladder() and
# wire.connections() hand the capture to the views (imported when called, so capturing
# never loads matplotlib).
UPWARD = {("labkit.capture.capture", "labkit.views.table"),
          ("labkit.capture.capture", "labkit.views.ladder"),
          ("labkit.capture.capture", "labkit.views.connections"),
          # and a lab network's net.capture(host) and net.figure() likewise
          ("labkit.net.hosts", "labkit.capture.hostcapture"),
          ("labkit.net.hosts", "labkit.views.topology")}


def _every_import(path: Path) -> set[str]:
    """labkit modules a module imports anywhere, inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labkit"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("labkit")}
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def layer_violations() -> list[tuple[str, str]]:
    bad = []
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        layer = _layer(name)
        if layer is None:   # labkit/__init__ and __main__ sit above every layer
            continue
        for dep in _every_import(path):
            target = _layer(dep)
            if target and target not in LAYERS[layer] and (name, dep) not in UPWARD:
                bad.append((name, dep))
    return sorted(bad)


def test_every_layer_has_a_rule():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


def test_no_module_imports_from_a_layer_above_it():
    assert layer_violations() == []


def test_the_layer_checker_sees_function_level_imports(tmp_path, monkeypatch):
    fake = tmp_path / "labkit"
    (fake / "protocols").mkdir(parents=True)
    (fake / "protocols" / "x.py").write_text(
        "def f():\n    from labkit.capture.flows import segments\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    assert layer_violations() == [("labkit.protocols.x", "labkit.capture.flows")]


def test_the_registry_is_one_fixed_explicit_order():
    from labkit.protocols import PROTOCOLS
    from labkit.protocols.base import ProtocolView

    assert [view.name for view in PROTOCOLS] == ["TLS", "WebSocket", "DNS", "HTTP"]
    assert all(issubclass(view, ProtocolView) for view in PROTOCOLS)
    # importing a server module adds nothing: the order cannot depend on imports
    import labkit.servers.dns
    import labkit.servers.websocket  # noqa: F401
    from labkit.protocols import PROTOCOLS as again

    assert again == PROTOCOLS


def test_each_capture_gets_fresh_protocol_state():
    from labkit.capture.flows import dissect
    from labkit.protocols.websocket import WebSocketView

    one, two = dissect([]), dissect([])
    assert one.find(WebSocketView) is not two.find(WebSocketView)


def test_no_labkit_module_imports_scapy_all():
    for path in ROOT.rglob("*.py"):
        assert not re.search(r"^\s*(from|import) scapy\.all\b", path.read_text(), re.M), path


def test_only_the_compat_module_names_scapys_private_names():
    for path in ROOT.rglob("*.py"):
        if path.name == "scapy_compat.py":
            continue
        assert not re.search(r"\b_tls_(version|cipher_suites|ext|named_groups|alert_description)\b",
                             path.read_text()), path


def test_scapy_is_in_the_pinned_range_and_has_every_private_name_labkit_uses():
    import tomllib

    from labkit.protocols.scapy_compat import PRIVATE

    dependencies = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    pin = next(line for line in dependencies["dependencies"] if line.startswith("scapy"))
    low, high = re.fullmatch(r"scapy>=([\d.]+),<([\d.]+)", pin.strip()).groups()
    installed = tuple(int(x) for x in re.findall(r"\d+", version("scapy"))[:3])
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= installed < as_tuple(high), (pin, version("scapy"))
    for module, names in PRIVATE.items():
        for dotted in names:
            obj = importlib.import_module(module)
            for part in dotted.split("."):
                obj = getattr(obj, part)   # AttributeError names what Scapy moved


def test_only_the_plotting_module_picks_a_backend():
    for path in ROOT.rglob("*.py"):
        if path.name != "plotting.py":
            assert "matplotlib.use(" not in path.read_text(), path
