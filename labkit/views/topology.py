"""A picture of a lab network: hosts, their interfaces and addresses, subnets, cables.

    >>> topology_figure(net.topology)        # or net.figure()

Hosts stand in columns by their distance (in cables) from the first host, so a chain
reads left to right as packets cross it; routers are drawn apart from end hosts. Each
cable says its subnet, and its MTU and impairment when it has them; each end says the
interface and address it has on that host.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from labkit.net.impairment import Impairment
from labkit.net.topology import Topology
from labkit.views.plotting import WIDEST, plt

__all__ = ["topology_figure", "impairment_text"]

HOST, ROUTER = "#2166ac", "#1b7837"   # end hosts blue, routers green (as SYN/ data)
PLAIN, IMPAIRED = "#555555", "#d01c8b"


def impairment_text(impairment: Impairment) -> str:
    """A few words for an Impairment: ``"20 ms, 1% loss, 10 Mbit/s"`` ("" if it does nothing)."""
    parts = []
    if impairment.delay or impairment.jitter:
        parts.append(f"{impairment.delay * 1000:g} ms"
                     + (f" ±{impairment.jitter * 1000:g}" if impairment.jitter else ""))
    if impairment.loss:
        parts.append(f"{impairment.loss * 100:g}% loss")
    if impairment.burst is not None:
        parts.append("bursty loss")
    if impairment.rate:
        parts.append(f"{impairment.rate / 1e6:g} Mbit/s")
    if impairment.trace is not None:
        parts.append("trace")
    if impairment.duplicate:
        parts.append(f"{impairment.duplicate * 100:g}% dup")
    if impairment.reorder:
        parts.append(f"{impairment.reorder * 100:g}% reorder")
    return ", ".join(parts)


def _positions(plan: Topology) -> dict[str, tuple[float, float]]:
    """Columns by distance from the first host; each column centred on the middle row."""
    depth = plan.distances(plan.hosts[0])
    for host in plan.hosts:  # hosts not joined to the first (a second island): after it
        depth.setdefault(host, max(depth.values()) + 1)
    columns: dict[int, list[str]] = {}
    for host in plan.hosts:
        columns.setdefault(depth[host], []).append(host)
    return {host: (float(x), (len(hosts) - 1) / 2 - j)
            for x, hosts in columns.items() for j, host in enumerate(hosts)}


CROWDED = 4  # hosts in one column from which a figure goes compact (a router's fan)


def topology_figure(plan: Topology, *, title: str | None = None, routes: bool = False,
                    ipv6: bool = False) -> Figure:
    """The network as a figure (matplotlib): one box per host, one line per cable;
    ``routes=True`` writes each host's planned routes under it; ``ipv6=True`` each
    interface's unique local IPv6 address under its IPv4 one.

    A column of CROWDED hosts or more (a router with many neighbours) is drawn compact:
    rows closer together, the address of a host with one interface in its box, and only
    the interface's name at the router's end of each cable."""
    where = _positions(plan)
    columns = max(x for x, _ in where.values()) + 1
    rows = max(sum(1 for x2, _ in where.values() if x2 == x) for x, _ in where.values())
    compact = rows >= CROWDED
    scale_y = 1.2 if compact else 3.0
    height = 1.15 * rows + 1.0 if compact else max(2.8, 2.6 * rows)
    width = min(WIDEST, max(8.0, 4.2 * columns))  # five hosts in a row still fit a slide
    fig, ax = plt.subplots(figsize=(width, height))
    plt.close(fig)  # returned, not auto-shown: the notebook displays it once

    def boxed(host: str) -> bool:  # its address drawn in its box
        return compact and len(plan.interfaces[host]) == 1

    for k, cable in enumerate(plan.cables):
        (xa, ya), (xb, yb) = where[cable.a], where[cable.b]
        ya, yb = ya * scale_y, yb * scale_y
        color = IMPAIRED if cable.forwarded else PLAIN
        ax.plot([xa, xb], [ya, yb], color=color, lw=3, zorder=1,
                linestyle="--" if cable.forwarded else "-")
        words = [str(plan.subnets[k])]
        mtu = cable.wire_mtu()
        if mtu != 1500:
            words.append(f"MTU {mtu}")
        if cable.forwarded:
            ways = {way: impairment_text(imp) for way, imp in cable.impairments().items()}
            if len(set(ways.values())) == 1:
                words.append(next(iter(ways.values())) or "through labkit's link")
            else:
                words += [f"{way}: {text or 'as is'}" for way, text in ways.items()]
        # the cable's words past its middle, its ends' words near each host: where cables
        # fan out of a router, neither sits on a neighbour's
        along = 0.55 if compact else 0.6
        mx, my = xa + along * (xb - xa), ya + along * (yb - ya)
        _text(ax, mx, my + (0.0 if compact else 0.12), (" · " if compact else "\n").join(words),
              ha="center", va="center" if compact else "bottom", fontsize=12, color=color,
              bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.9))
        for host, (x0, y0), (x1, y1) in ((cable.a, (xa, ya), (xb, yb)),
                                         (cable.b, (xb, yb), (xa, ya))):
            if boxed(host):
                continue  # its address is in its box
            iface = plan.interface(host, cable.b if host == cable.a else cable.a)
            if compact:  # a fan: only the interface's name, close to the host
                fx, fy = x0 + 0.25 * (x1 - x0), y0 + 0.25 * (y1 - y0)
                _text(ax, fx, fy, iface.name, ha="center", va="center", fontsize=11,
                      color="#333333", bbox=dict(boxstyle="round,pad=0.15", fc="#f4f4f4",
                                                 ec="none"))
                continue
            # along a slanting cable, further from the host: clear of its box
            along = 0.22 if y0 == y1 else 0.3
            fx, fy = x0 + along * (x1 - x0), y0 + along * (y1 - y0)
            label = f"{iface.name}\n{iface.address.ip}"
            if ipv6:
                label += f"\n{iface.address6.ip}"
            _text(ax, fx, fy - 0.14, label, ha="center", va="top", fontsize=11,
                  color="#333333", bbox=dict(boxstyle="round,pad=0.15", fc="#f4f4f4",
                                             ec="none"))
    for host, (x, y) in where.items():
        router = host in plan.routers
        label = host + ("\nrouter" if router else "")
        if boxed(host):
            iface = plan.interfaces[host][0]
            label += f"\n{iface.address.ip}" + (f"\n{iface.address6.ip}" if ipv6 else "")
        _text(ax, x, y * scale_y, label, ha="center", va="center",
              fontsize=15 if not router else 13, fontweight="bold", color="white", zorder=3,
              linespacing=1.1,
              bbox=dict(boxstyle="round,pad=0.45", fc=ROUTER if router else HOST, ec="none"))
        if routes and plan.routes[host]:
            _text(ax, x, y * scale_y - 0.55, "\n".join(str(r) for r in plan.routes[host]),
                  ha="center", va="top", fontsize=10, color=ROUTER if router else HOST,
                  family="monospace")
    ys = [y * scale_y for _, y in where.values()]
    ax.set_xlim(-0.45, columns - 0.55)
    margin = 0.5 if compact else 0.6
    ax.set_ylim(min(ys) - (1.0 if routes else 0.7 if not compact else 0.55), max(ys) + margin)
    ax.axis("off")
    if title is None:
        routers = len(plan.routers)
        title = (f"{len(plan.hosts)} lab hosts ({routers} router{'s' * (routers != 1)}), "
                 f"{len(plan.cables)} subnets")
    ax.set_title(title, fontsize=15, pad=10, parse_math=False)
    fig.tight_layout()
    return fig


def _text(ax: Axes, x: float, y: float, text: str, **style: Any) -> Text:
    return ax.text(x, y, text, parse_math=False, **style)
