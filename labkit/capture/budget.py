"""How much a live capture may hold in memory, and what it says when it holds less.

    >>> budget = MemoryBudget(256 * 10**6)    # Capture(..., memory=256 * 10**6): the default
    >>> budget.ring_max, budget.whole, budget.frames   # ring, whole frames, headers only
    (64000000, 144000000, 192000000)
    >>> budget.notice(frames, not_kept=0, not_kept_bytes=0)      # None: everything kept

A capture's memory is its ring (the kernel's buffer, which grows as traffic needs it, up
to ``ring_max``) and the frames it keeps.  Frames are kept whole until ``whole`` bytes,
then cut to their headers (Ethernet, IP, TCP/UDP: every view but the payload's content
still works), then, past ``frames``, not kept at all.  Each step is said in every view,
as ``lost`` is.  Why cut payloads rather than spill to a temporary file: on many systems
/tmp is memory too (tmpfs), a hub's users share one disk, writing hundreds of MB would
slow the reader until it loses packets, and what a big capture is for (throughput,
sequence graphs, connections, retransmissions) needs the headers, not the bytes.  A cut
frame is saved as pcapng does it (captured length < original length): Wireshark shows
it as "[Packet size limited during capture]".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from labkit.servers import arguments

if TYPE_CHECKING:
    from labkit.capture.frames import Frame

__all__ = ["MemoryBudget", "DEFAULT_MEMORY", "MIN_MEMORY", "FRAME_OVERHEAD"]

DEFAULT_MEMORY = 256 * 10**6   # bytes: ~100 MB of payload whole, then headers only
MIN_MEMORY = 8 * 10**6          # less would not hold a ring and a lesson's frames
MAX_MEMORY = 10**12             # bytes: a typo's guard, far above any machine's memory
RING_MAX = 64 * 1024 * 1024     # the most ring a capture grows to (tcpdump -B 65536)
FRAME_OVERHEAD = 170            # bytes Python spends per kept frame besides its data


class MemoryBudget:
    """The limits of one capture (see the module docstring); ``limit`` in bytes."""

    def __init__(self, limit: int = DEFAULT_MEMORY):
        self.limit = arguments.integer(limit, "memory", MIN_MEMORY, MAX_MEMORY,
                                       "512 * 10**6 for 512 MB; the default is 256 MB")
        self.ring_max = min(RING_MAX, limit // 4)
        self.frames = limit - self.ring_max      # frames kept, headers only past `whole`
        self.whole = self.frames * 3 // 4        # frames kept whole up to this

    def notice(self, frames: Sequence[Frame], not_kept: int, not_kept_bytes: int
               ) -> str | None:
        """What every view says when some of the capture was not kept (None: all was).

        ``frames`` are the kept :class:`~labkit.capture.frames.Frame` s, in order; a cut
        one has less data than its original length.
        """
        cut = [i for i, (data, _ns, wirelen) in enumerate(frames) if len(data) < wirelen]
        if not cut and not not_kept:
            return None
        said = []
        if cut:
            missing = sum(frames[i].wirelen - len(frames[i].data) for i in cut)
            said.append(f"from packet {cut[0]:,} on it kept headers only ({_mb(missing)} of "
                        "payload left out)")
        if not_kept:
            said.append(f"the {not_kept:,} packets after packet {len(frames) - 1:,} "
                        f"({_mb(not_kept_bytes)}) were not kept at all")
        return (f"⚠ this capture keeps at most {_mb(self.limit)} (memory={self.limit:,}): "
                f"{'; '.join(said)}; Capture(..., memory=...) keeps more")


def _mb(size: int) -> str:
    return f"{size / 10**6:,.0f} MB" if size >= 10**6 else f"{size:,} bytes"
