"""What a protocol tells a capture: the one interface every protocol view implements.

A capture is looked at through a :class:`Dissection`: one fresh instance of every
registered view (see :mod:`labkit.protocols`), so whatever a view learns about one
capture (which connections were upgraded, which packets carry TLS records) lives on
that instance and never leaks into the next capture.

    >>> class Echo(ProtocolView):
    ...     name = "echo"
    ...     def recognises(self, payload, pkt):
    ...         return payload.startswith(b"ECHO ")
    ...     def describe(self, payload, pkt):
    ...         return "echo " + payload[5:].decode()
    >>> Dissection([Echo], packets).describe(b"ECHO hi", pkt)
    'echo hi'

This module imports no Scapy layer and no other labkit module: the protocol views
and the capture code both depend on it, never the other way round.  What a view is
given of a capture is described here as protocols (:class:`Frames`, :class:`Header`,
:class:`Segment`): the capture's classes fit them without importing this module's
names, and this module never imports the capture's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["ProtocolView", "Dissection", "Later", "ip_layer", "tcp_connection", "headers",
           "Frames", "Header", "Segment", "Connection"]

V = TypeVar("V", bound="ProtocolView")
T = TypeVar("T")

# Both ends of a TCP connection, {(address, port), (address, port)}: the same either way
Connection = frozenset[tuple[str, int]]


class Header(Protocol):
    """What a capture read from a frame's bytes (``labkit.capture.frames.Header``)."""

    @property
    def proto(self) -> str: ...        # "TCP" or "UDP"
    @property
    def payload(self) -> bytes: ...


@runtime_checkable
class Frames(Protocol):
    """A capture's frames (``labkit.capture.frames.Frames``): headers read from bytes,
    packets dissected by Scapy on request (or as they are iterated)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Packet]: ...
    def header(self, i: int) -> Header | None: ...
    def packet(self, i: int) -> Packet: ...


class Segment(Protocol):
    """A captured packet as a ladder arrow (``labkit.capture.flows.Segment``)."""

    @property
    def index(self) -> int: ...
    @property
    def src(self) -> str: ...
    @property
    def dst(self) -> str: ...
    @property
    def proto(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def summary(self) -> str: ...
    @property
    def packet(self) -> Packet | None: ...


class ProtocolView:
    """One protocol as captures show it; subclass it and override what applies.

    The capture calls, for each look at its packets (a new instance each time):
    :meth:`analyse` once with all packets, then per packet :meth:`recognises` and, if
    true, :meth:`describe` (the table's summary), then per ladder arrow :meth:`label`.
    A capture that reads headers from frames' bytes asks :meth:`might_recognise` first,
    and dissects a packet for a view only if it might and ``needs_packet``.
    """

    name = "protocol"
    # False: recognises() and describe() decide from the payload (and might_recognise's
    # proto) alone, so a capture may give them None for pkt rather than dissect it
    needs_packet = True

    def analyse(self, packets: Frames | Iterable[Packet], meta: dict[str, Any]) -> None:
        """Look at the whole conversation first (e.g. reassemble streams, find upgrades).

        ``meta`` is the capture's metadata, e.g. ``meta["tls_keylog"]``.
        """

    def recognises(self, payload: bytes, pkt: Packet | None) -> bool:
        """Is this packet's payload (TCP or UDP, maybe empty) this protocol's?"""
        return False

    def might_recognise(self, payload: bytes, proto: str) -> bool:
        """A cheap look before Scapy dissects a packet: False promises that
        :meth:`recognises` is False for any packet carrying this ``proto`` ("TCP" or
        "UDP") ``payload``.  Override it when payload bytes alone can rule a packet out."""
        return True

    def describe(self, payload: bytes, pkt: Packet | None) -> str:
        """The table's one-line summary of a packet this view recognised."""
        raise NotImplementedError(f"{type(self).__name__} recognises packets but cannot "
                                  "describe them: define describe()")

    def label(self, seg: Segment) -> str | None:
        """Ladder arrow text for a :class:`~labkit.capture.flows.Segment`; None: not mine."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Dissection:
    """One look at one capture through every view, in the given (fixed) order.

    The first view that recognises a payload describes it; the first view with a
    label for an arrow labels it.
    """

    def __init__(self, views: Iterable[type[ProtocolView]],
                 packets: Frames | Iterable[Packet] = (),
                 meta: dict[str, Any] | None = None) -> None:
        self.views = [view() for view in views]  # fresh state for this capture
        for view in self.views:
            view.analyse(packets, meta or {})

    def describe(self, payload: bytes, pkt: Packet | None) -> str | None:
        for view in self.views:
            if view.recognises(payload, pkt):
                return view.describe(payload, pkt)
        return None

    def describe_lazily(self, payload: bytes, proto: str, pkt: Packet | Later[Packet] | None
                        ) -> str | None:
        """:meth:`describe`, where ``pkt`` may be a :class:`Later`: made only when a view
        that might recognise the payload needs the packet (the others get None)."""
        for view in self.views:
            if not view.might_recognise(payload, proto):
                continue
            if isinstance(pkt, Later) and view.needs_packet:
                pkt = pkt()
            given = None if isinstance(pkt, Later) else pkt
            if view.recognises(payload, given):
                return view.describe(payload, given)
        return None

    def find(self, kind: type[V]) -> V:
        """This capture's instance of a view class, e.g. ``find(TLSView).connections``."""
        return next(view for view in self.views if isinstance(view, kind))

    def label(self, seg: Segment) -> str | None:
        for view in self.views:
            text = view.label(seg)
            if text is not None:
                return text
        return None

    def __repr__(self) -> str:
        return f"<Dissection {' '.join(v.name for v in self.views)}>"


class Later(Generic[T]):
    """A value made when first needed: ``Later(frames.packet, 7)()`` dissects frame 7."""

    __slots__ = ("args", "make")

    def __init__(self, make: Callable[..., T], *args: Any) -> None:
        self.make, self.args = make, args

    def __call__(self) -> T:
        return self.make(*self.args)


def headers(packets: Frames | Iterable[Packet]
            ) -> Iterator[tuple[Header | None, Later[Packet]]]:
    """``(header, packet)`` for each of ``packets``: ``header`` read from the bytes when
    ``packets`` can (a capture's Frames: ``.header(i)``, a NamedTuple with ``proto``,
    ``flags`` and ``payload``; None for a frame that needs Scapy), else None, and the
    Scapy packet as a :class:`Later` (so it is dissected only if asked for).

        >>> for head, pkt in headers(packets):
        ...     if head is None: print(pkt().summary())  # the Scapy way
    """
    if not isinstance(packets, Frames):   # plain Scapy packets
        for pkt in packets:
            yield None, Later(_same, pkt)
        return
    for i in range(len(packets)):
        yield packets.header(i), Later(packets.packet, i)


def _same(value: T) -> T:
    return value


def ip_layer(pkt: Packet) -> Any:  # (a Scapy layer: its fields are read by name)
    """The IPv4 or IPv6 layer of a Scapy packet, or None."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    if IP in pkt:
        return pkt[IP]
    if IPv6 in pkt:
        return pkt[IPv6]
    return None


def tcp_connection(pkt: Packet) -> Connection | None:
    """Both ends of the TCP connection a packet belongs to (the same either way), or None."""
    from scapy.layers.inet import TCP

    ip = ip_layer(pkt)
    if ip is None or TCP not in pkt:
        return None
    tcp = pkt[TCP]
    return frozenset({(ip.src, tcp.sport), (ip.dst, tcp.dport)})
