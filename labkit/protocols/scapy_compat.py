"""Every private Scapy name labkit relies on, in one place.

Scapy does not promise these (leading underscores, undocumented helpers), so they
are imported or listed here only; ``tests/test_architecture.py`` checks that each
one exists in the installed Scapy and that this Scapy is in requirements.txt's
range, so an upgrade that moves one fails there, not in a notebook.

    >>> tls_names()["versions"][0x0304]
    'TLS 1.3'

Imports are lazy: Scapy's TLS layer loads only when a capture holds TLS.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

__all__ = ["tls_names", "PRIVATE"]

# module -> names (a dotted name is a method of a class) labkit imports, calls or overrides
PRIVATE = {
    "scapy.layers.tls.basefields": ["_tls_version"],
    "scapy.layers.tls.crypto.suites": ["_tls_cipher_suites"],
    "scapy.layers.tls.extensions": ["_tls_ext"],
    "scapy.layers.tls.crypto.groups": ["_tls_named_groups"],
    "scapy.layers.tls.record": ["_tls_alert_description"],
}


def _private(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


@functools.cache
def tls_names() -> dict[str, dict[int, str]]:
    """Scapy's tables of TLS numbers -> names (versions, cipher suites, ...)."""
    return {
        "versions": _private("scapy.layers.tls.basefields", "_tls_version"),
        "cipher_suites": _private("scapy.layers.tls.crypto.suites", "_tls_cipher_suites"),
        "extensions": _private("scapy.layers.tls.extensions", "_tls_ext"),
        "named_groups": _private("scapy.layers.tls.crypto.groups", "_tls_named_groups"),
        "alerts": _private("scapy.layers.tls.record", "_tls_alert_description"),
    }
