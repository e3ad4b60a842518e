"""labkit's public API documents itself: ``help()`` of every exported class lists each of
its attributes with a line that says what it is, every public method has a docstring,
and every exported function and check is fully annotated (mypy checks the annotations:
``make lint``)."""

import ast
import importlib
import inspect
import pkgutil
import pydoc
import re
import textwrap
from functools import cache
from pathlib import Path

import pytest

import labkit
import labkit.checks

ROOT = Path(__file__).parent.parent

CLASSES = sorted(name for name in labkit.__all__ if inspect.isclass(getattr(labkit, name)))
FUNCTIONS = sorted(name for name in labkit.__all__ if inspect.isfunction(getattr(labkit, name)))


def _ours(klass: type) -> bool:
    return klass.__module__.startswith("labkit.")


def _not_object(klass: type) -> bool:
    return klass is not object


def _assigned_on_self(klass: type) -> set[str]:
    """Public names a class's own methods assign on ``self`` (``self.lost = ...``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError):
        return set()
    found = set()
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            for part in ast.walk(target):
                if (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                        and part.value.id == "self" and not part.attr.startswith("_")):
                    found.add(part.attr)
    return found


def _is_method(value: object) -> bool:
    return inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod))


@cache
def public_attributes(cls: type, ours=_ours) -> frozenset[str]:
    """What a user can read off an instance: instance attributes, fields, properties and
    class constants, defined in labkit (not what a base like Exception brings)."""
    names: set[str] = set()
    for klass in filter(ours, cls.__mro__):
        names |= {name for name, value in vars(klass).items()
                  if not name.startswith("_") and not _is_method(value)
                  and not inspect.isclass(value)}
        names |= {name for name in vars(klass).get("__annotations__", {})
                  if not name.startswith("_")}
        names |= _assigned_on_self(klass)
    return frozenset(names)


def _descriptor_doc(cls: type, name: str) -> str | None:
    """The docstring help() shows under a property (or other data descriptor) ``name``."""
    for klass in cls.__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            if inspect.isdatadescriptor(value) and not isinstance(value, (int, str)):
                doc = (value.__doc__ or "").strip()
                # (a NamedTuple field's own doc says only where it is in the tuple)
                return None if doc.startswith("Alias for field number") else doc
            return None
    return None


def undescribed(cls: type, ours=_ours) -> list[str]:
    """The attributes of ``cls`` that ``help(cls)`` does not describe on a line of their own."""
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    missing = []
    for name in sorted(public_attributes(cls, ours)):
        doc = _descriptor_doc(cls, name)
        if doc and re.search(rf"^ \|  {re.escape(name)}\n \|      \S", text, re.M):
            continue  # a property (or a documented descriptor), with its docstring
        if re.search(rf"^ \|      {re.escape(name)}: \S", text, re.M):
            continue  # a line of the class docstring's "Attributes:"
        missing.append(name)
    return missing


@pytest.mark.parametrize("name", CLASSES)
def test_help_lists_every_attribute_with_a_line_that_says_what_it_is(name):
    cls = getattr(labkit, name)
    missing = undescribed(cls)
    assert not missing, (
        f"help(labkit.{name}) does not describe {missing}: give each a line `name: what it "
        f"is` under 'Attributes:' in the class docstring, or a docstring if it is a property")


@pytest.mark.parametrize("name", CLASSES)
def test_every_public_method_has_a_docstring(name):
    cls = getattr(labkit, name)
    bare = [method for klass in filter(_ours, cls.__mro__)
            for method, value in vars(klass).items()
            if not method.startswith("_") and _is_method(value)
            and not inspect.getdoc(getattr(cls, method))]
    assert not bare, f"labkit.{name}: public methods without a docstring: {sorted(set(bare))}"


class _Bare:
    """Nothing said."""

    LIMIT = 3

    def __init__(self):
        self.lost = 0
        self._hidden = 1

    @property
    def mode(self):
        return "live"


class _Said(_Bare):
    """Something said.

    Attributes:
        LIMIT: how many
        lost: packets the capture missed
    """

    @property
    def mode(self):
        """``"live"`` or ``"replay"``."""
        return "live"


def test_the_attribute_finder_sees_what_it_must():
    """The walker itself: fields, self-assignments, properties and constants are found,
    methods and private names are not, and an undescribed one is reported."""
    from labkit.servers.load import LoadResult, SlowReader

    assert {"clients", "latencies", "ok", "p50_ms"} <= public_attributes(LoadResult)
    assert {"bytes_sent", "stuck", "FILL_LIMIT"} <= public_attributes(SlowReader)
    assert "latency_ms" not in public_attributes(LoadResult)
    assert undescribed(_Bare, _not_object) == ["LIMIT", "lost", "mode"]
    assert undescribed(_Said, _not_object) == []


def test_a_server_lists_what_it_shares_with_every_server():
    """help(HTTPServer) shows its own attributes, TCPServer's and every lab server's."""
    text = pydoc.render_doc(labkit.HTTPServer, renderer=pydoc.plaintext)
    for line in ("requests_served: ", "Attributes from TCPServer:", "connections_served: ",
                 "Attributes from LabServer:", "errors: "):
        assert line in text


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_exported_function_is_fully_annotated(name):
    function = inspect.unwrap(getattr(labkit, name))
    signature = inspect.signature(function)
    bare = [p.name for p in signature.parameters.values()
            if p.annotation is inspect.Parameter.empty]
    assert not bare, f"labkit.{name}: parameters without a type: {bare}"
    assert signature.return_annotation is not inspect.Signature.empty, (
        f"labkit.{name} does not say what it returns")


def _checks():
    for info in pkgutil.iter_modules(labkit.checks.__path__):
        module = importlib.import_module(f"labkit.checks.{info.name}")
        for name, value in vars(module).items():
            if name.startswith("check_") and inspect.isfunction(value):
                yield pytest.param(value, id=f"{info.name}.{name}")


@pytest.mark.parametrize("check", list(_checks()))
def test_every_check_keeps_its_typed_signature_through_answers_back(check):
    """``answers_back`` wraps each check (a ParamSpec keeps its parameters for mypy);
    what the student sees in help() is the check's own signature, fully annotated."""
    assert inspect.unwrap(check) is not check, "a check is decorated with @answers_back"
    signature = inspect.signature(check)
    assert signature == inspect.signature(inspect.unwrap(check))
    bare = [p.name for p in signature.parameters.values()
            if p.annotation is inspect.Parameter.empty]
    assert not bare, f"{check.__qualname__}: parameters without a type: {bare}"
    assert signature.return_annotation in ("Verdict", labkit.checks.Verdict)



# The five layers a notebook calls, as pyproject.toml's strict override must name them.
STRICT = {"labkit.servers.*", "labkit.capture.*", "labkit.protocols.*", "labkit.views.*",
          "labkit.checks.*"}


def test_the_layers_a_notebook_calls_are_checked_strictly():
    """pyproject.toml's strict override names the five layers, with mypy --strict's
    flags (per module: `strict = true` in an override would apply to every module)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = next(o for o in config["overrides"] if o.get("disallow_untyped_defs"))
    for flag in ("disallow_incomplete_defs", "disallow_untyped_calls", "disallow_any_generics",
                 "disallow_untyped_decorators", "disallow_subclassing_any", "warn_return_any",
                 "strict_equality", "extra_checks"):
        assert strict.get(flag) is True, f"the strict override lacks {flag} = true"
    assert strict.get("implicit_reexport") is False
    assert set(strict["module"]) >= STRICT
    let_off = [o["module"] for o in config["overrides"] if o.get("disallow_untyped_defs") is False]
    assert not let_off, f"modules let off the strict checks: {let_off}"
