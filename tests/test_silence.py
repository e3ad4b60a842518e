"""silence_figure: one row per connection after its peer fell silent, title from the data."""

import pytest

from labkit import silence_figure
from labkit.capture.flows import Segment


def seg(index, t, src, flags="PSH-ACK", length=14):
    return Segment(index, t, src, "server", "TCP", flags=flags, seq=1, ack=1, length=length)


SEGMENTS = [seg(0, 0.0, "client"), seg(1, 0.23, "client"), seg(2, 0.7, "client"),
            seg(3, 1.0, "client 2", "ACK", 0), seg(4, 2.0, "client 2", "ACK", 0),
            seg(5, 3.0, "client 2", "RST-ACK", 0)]


def test_rows_markers_and_a_title_computed_from_the_times():
    fig = silence_figure(SEGMENTS, since=0.0, rows={"retries": ("client", 3.4),
                                                     "keepalive": ("client 2", 3.0),
                                                     "idle": ("client 3", None)})
    ax = fig.axes[0]
    assert ax.get_title() == "Peer silent: the kernel gave up after 3.4 and 3.0 s; idle: never"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["idle", "keepalive", "retries"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["data (sent again)", "keepalive probe", "RST: the kernel gave up"]


def test_segments_before_the_silence_are_left_out_and_rows_are_required():
    fig = silence_figure(SEGMENTS, since=0.5, rows={"retries": ("client", None)})
    assert fig.axes[0].get_title() == "Peer silent: the kernel never gave up"
    lines = fig.axes[0].get_lines()
    xs = [x for line in lines if line.get_marker() == "s" for x in line.get_xdata()]
    assert xs == [pytest.approx(0.2)]   # only the retransmission at 0.7 s
    with pytest.raises(ValueError, match="needs rows"):
        silence_figure(SEGMENTS, since=0.0, rows={})
