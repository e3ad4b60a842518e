"""A capture on a lab host's interface, its rows labelled by host name.

    >>> with net.capture("r1", interface="eth1", name="10-ttl") as wire:
    ...     ...
    >>> wire.table()      # r1 → client  ICMP time exceeded ...

Made by :meth:`LabNetwork.capture <labkit.net.hosts.LabNetwork.capture>`: a
:class:`~labkit.capture.capture.Capture` whose sockets are opened on the host (its thread
steps onto the host, ``on(host)``, only while the capture starts), and whose ``meta``
names every address of the network by its host, so a replayed recording reads the same.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from labkit.capture.capture import Capture

__all__ = ["HostCapture"]


class HostCapture(Capture):
    """``Capture(*targets, iface=interface, filter=...)`` on lab host ``host``; with no
    targets and no filter, every packet on that interface.  ``on(host)`` runs a block on
    the host; ``names`` is {address: host name} of the whole network, ``hosts`` its
    hosts in order (a ladder's lifelines, left to right).

    Attributes:
        host: the lab host it captures on
    """

    def __init__(self, host: str, interface: str, targets: tuple[object, ...], *,
                 on: Callable[[str], AbstractContextManager[object]], names: dict[str, str],
                 hosts: list[str] | None = None, filter: str | None = None,
                 **options: Any) -> None:
        if not targets and filter is None:
            filter = ""  # nothing named: everything on this interface
        super().__init__(*targets, iface=interface, filter=filter, **options)
        self.host = host
        self._on = on
        self.meta["hosts"] = dict(names)
        if hosts:
            self.meta["lifelines"] = list(hosts)  # a ladder's lifelines in the network's order
        self.meta["where"] = f"{host} {interface}"

    def __enter__(self) -> HostCapture:
        with self._on(self.host):  # the capture's sockets belong to the host
            super().__enter__()
        return self

    def __repr__(self) -> str:
        return super().__repr__().replace("<Capture ", f"<Capture on {self.host} ", 1)
