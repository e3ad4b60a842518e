"""The checks on every public constructor's arguments: one error discipline for labkit.

A wrong *type* raises ``TypeError``, a right type with a wrong *value* ``ValueError``;
either way the message has one shape - what the argument must be, an example, and what
it was - so a student reads every mistake the same way:

    >>> port(True)
    Traceback (most recent call last):
    TypeError: port must be an int from 0 to 65535 (e.g. 0 for any free port), not True
    >>> port(70000)
    Traceback (most recent call last):
    ValueError: port must be an int from 0 to 65535 (e.g. 0 for any free port), not 70000

Servers check everything here before they bind or start a thread, and Capture checks
its own arguments with the same functions.  (A ``bool`` is never a number here:
``True`` as a port or a count is a mistake, not 1.)
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

__all__ = ["fail", "integer", "number", "port", "host", "server_name", "recording_name",
           "probability", "one_of", "instance", "function", "flag", "path"]

T = TypeVar("T")

# A recording's name becomes a file name, data/<name>.pcapng: no separators, no leading
# dot or dash.
_RECORDING = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def _shown(value: object) -> str:
    """``value`` as the message quotes it: its repr, cut short (a 60 KB string stays out)."""
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def fail(error: type[Exception], what: str, must: str, value: object,
         example: str | None = None, why: str | None = None) -> NoReturn:
    """Raise ``error("<what> must be <must> (e.g. <example>), not <value>: <why>")``."""
    hint = f" (e.g. {example})" if example else ""
    tail = f": {why}" if why else ""
    raise error(f"{what} must be {must}{hint}, not {_shown(value)}{tail}")


def integer(value: object, what: str, low: int, high: int, example: str | None = None) -> int:
    """``value`` if it is an int from ``low`` to ``high``: ``integer(n, "clients", 1, 1000)``."""
    must = f"an int from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int):
        fail(TypeError, what, must, value, example)
    if not low <= value <= high:
        fail(ValueError, what, must, value, example)
    return value


def number(value: object, what: str, low: float, high: float, example: str | None = None,
           *, above_low: bool = False, unit: str = "") -> float:
    """``value`` as a float from ``low`` (or above it) to ``high``: seconds, probabilities."""
    lowest = f"more than {low:g} and at most" if above_low else f"from {low:g} to"
    must = f"a number {lowest} {high:g}{unit}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(TypeError, what, must, value, example)
    if not (low < value if above_low else low <= value) or not value <= high:
        fail(ValueError, what, must, value, example)  # (NaN fails both comparisons: refused)
    return float(value)


def flag(value: object, what: str) -> bool:
    """``value`` if it is True or False (not 1, not "yes")."""
    if not isinstance(value, bool):
        fail(TypeError, what, "True or False", value)
    return value


def port(value: object, what: str = "port", low: int = 0) -> int:
    """A TCP/UDP port number from ``low`` to 65535 (0 = any free port, where allowed)."""
    example = "0 for any free port" if low == 0 else "8080"
    return integer(value, what, low, 65535, example)


def host(value: object, what: str = "host") -> str:
    """``value`` if it is a loopback IP address (127.0.0.1, ::1), or an address of the lab
    host this thread is on (``with net.on("server"):``), or there every address of it
    ("::", "0.0.0.0"): labs never listen on a network."""
    must = "a loopback IP address as text"
    if not isinstance(value, str):
        fail(TypeError, what, must, value, "'127.0.0.1' or '::1'")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        fail(ValueError, what, must, value, "'127.0.0.1' or '::1'",
             "give the address itself, not a name")
    if not ip.is_loopback and not _on_lab_host(value):
        fail(ValueError, what, "a loopback address", value, "'127.0.0.1' or '::1'",
             "it is not a loopback address; lab servers bind 127.0.0.1 or ::1, or, on a lab "
             "host (inside `with net.on(...)` of a LabNetwork), that host's address (or '::')")
    return value


def _on_lab_host(address: str) -> bool:
    # any of the host's addresses: a router has one on each of its subnets; or all of them
    # ("::", which takes IPv4 too, or "0.0.0.0"): a lab host's network has no others
    from labkit.net.hosts import current_lab_addresses  # only for non-loopback addresses

    here = current_lab_addresses()
    return address in here or (bool(here) and ipaddress.ip_address(address).is_unspecified)


def server_name(value: object, what: str = "name") -> str:
    """A server's name: it shows in thread names, tables and errors, so short printable text."""
    must = "short printable text (1 to 64 characters, no newlines)"
    if not isinstance(value, str):
        fail(TypeError, what, must, value, "'echo'")
    if not value.strip() or not value.isprintable() or len(value) > 64:
        fail(ValueError, what, must, value, "'echo'")
    return value


def recording_name(value: object, what: str = "name") -> str | None:
    """A recording's name (``data/<name>.pcapng``), or None for a capture that is not recorded."""
    must = ("None or a file name of 1-80 letters, digits, '-', '_' or '.', starting with a "
            "letter or digit, without '..'")
    if value is None:
        return None
    if not isinstance(value, str):
        fail(TypeError, what, must, value, "'01-handshake'")
    if not _RECORDING.fullmatch(value) or ".." in value:
        fail(ValueError, what, must, value, "'01-handshake'",
             "it names the file data/<name>.pcapng")
    return value


def probability(value: object, what: str) -> float:
    """A probability, from 0 to 1."""
    return number(value, what, 0, 1, "0.1")


def one_of(value: T, what: str, choices: Iterable[Any]) -> T:
    """``value`` if it is one of ``choices`` (strings, or None)."""
    options = list(choices)
    shown = ", ".join(repr(c) for c in options)
    must = f"one of {shown}"
    if any(value == c and type(value) is type(c) for c in options):
        return value
    if not any(isinstance(value, type(c)) for c in options):
        fail(TypeError, what, must, value)
    fail(ValueError, what, must, value)


def instance(value: object, what: str, kinds: type | tuple[type, ...], must: str,
             example: str | None = None) -> Any:
    """``value`` if it is an instance of ``kinds`` (``must`` says it in words)."""
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        fail(TypeError, what, must, value, example)
    if not isinstance(value, kinds):
        fail(TypeError, what, must, value, example)
    return value


def function(value: object, what: str, must: str,
             example: str | None = None) -> Callable[..., Any]:
    """``value`` if it can be called: a handler, an app, a callback."""
    if not callable(value):
        fail(TypeError, what, must, value, example)
    return value


def path(value: object, what: str, example: str | None = None) -> str | os.PathLike[str]:
    """A file-system path: a str or a pathlib.Path."""
    must = "a path (str or pathlib.Path)"
    if isinstance(value, str):
        if not value:
            fail(ValueError, what, must, value, example)
        return value
    if not isinstance(value, os.PathLike):
        fail(TypeError, what, must, value, example)
    return value
