"""Time-sequence graphs from hand-built transfers: a loss repaired by fast retransmit, one
repaired by a timeout, the window line, and dropped frames matched to captured segments."""

import pytest
from packets import ISN_C, ISN_S, C, S, tcp

from labkit.capture.flows import segments
from labkit.views.timeseq import dropped_segments, seq_trace, time_sequence

MSS = 100


def transfer(lost: int, n: int = 6, *, rto: float = 0.3):
    """The client sends n segments of MSS bytes; segment ``lost`` (0-based) never arrives.

    The server ACKs each segment it gets (a duplicate ACK for each one after the hole);
    the client resends the lost one after 3 duplicate ACKs, or after ``rto`` if fewer
    came; then the server ACKs everything.
    """
    syn = [tcp(C, S, "S", ISN_C, t=0.0, options=[("MSS", MSS), ("WScale", 2)]),
           tcp(S, C, "SA", ISN_S, ISN_C + 1, t=0.01, options=[("MSS", MSS), ("WScale", 3)]),
           tcp(C, S, "A", ISN_C + 1, ISN_S + 1, t=0.02)]
    pkts, t, dups = list(syn), 0.03, 0
    for i in range(n):
        pkt = tcp(C, S, "PA", ISN_C + 1 + i * MSS, ISN_S + 1, b"x" * MSS, t=t, ip_id=10 + i)
        pkts.append(pkt)
        if i == lost:
            continue
        dups += i > lost                       # after the hole, every ACK repeats itself
        acked = min(i + 1, lost) * MSS if i > lost else (i + 1) * MSS
        pkts.append(tcp(S, C, "A", ISN_S + 1, ISN_C + 1 + acked, t=t + 0.01, window=1000))
        t += 0.001
    t = t + 0.02 if dups >= 3 else t + rto
    pkts.append(tcp(C, S, "PA", ISN_C + 1 + lost * MSS, ISN_S + 1, b"x" * MSS, t=t, ip_id=99))
    pkts.append(tcp(S, C, "A", ISN_S + 1, ISN_C + 1 + n * MSS, t=t + 0.01, window=1000))
    return pkts


def test_a_hole_then_three_duplicate_acks_is_a_fast_retransmit():
    pkts = transfer(lost=1)
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert (trace.sender, trace.receiver) == ("client", "server")
    # relative numbers, as Wireshark shows them: the SYN took seq 0, data starts at 1
    assert [(d.seq, d.retransmission) for d in trace.data] == [
        (1, False), (101, False), (201, False), (301, False), (401, False), (501, False),
        (101, True)]
    assert [a.ack for a in trace.duplicate_acks] == [101] * 4   # segments 2..5 each asked again
    assert trace.dup_acks_before(trace.retransmissions[0]) == 4
    assert trace.recovery() == ["fast retransmit"]
    assert trace.bytes_delivered == 601


def test_a_lost_last_segment_has_nobody_to_complain_so_it_waits_for_the_timer():
    pkts = transfer(lost=5)
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert trace.duplicate_acks == []
    assert trace.recovery() == ["timeout"]
    assert [d.seq for d in trace.retransmissions] == [501]


def test_two_duplicate_acks_are_not_a_fast_retransmit():
    pkts = transfer(lost=3, n=6)   # segments 4 and 5 arrive: 2 duplicate ACKs
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert len(trace.duplicate_acks) == 2 and trace.recovery() == ["timeout"]
    soon = transfer(lost=3, n=6, rto=0.05)   # resent 50 ms after those ACKs: not the timer
    assert seq_trace(segments(soon, roles={S[1]: "server"})).recovery() == ["early retransmit"]


def test_the_window_line_is_the_ack_plus_the_scaled_window():
    pkts = transfer(lost=1)
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    # the server announced WScale 3 in its SYN-ACK: a window field of 1000 is 8000 bytes
    assert all(a.window_edge == a.ack + 8000 for a in trace.acks)


def test_without_window_scaling_on_both_sides_the_window_is_taken_as_it_is():
    pkts = transfer(lost=1)
    pkts[0] = tcp(C, S, "S", ISN_C, t=0.0, options=[("MSS", MSS)])  # the client did not offer
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert all(a.window_edge == a.ack + 1000 for a in trace.acks)


def test_the_links_frame_number_n_is_the_nth_packet_the_sender_sent():
    pkts = transfer(lost=1)
    segs = segments(pkts, roles={S[1]: "server"})
    # the client's frames: SYN 0, ACK 1, data 2, 3, ...: the 2nd data segment is frame 3
    lost = dropped_segments(segs, [3])
    assert [segs[i].seq for i in lost] == [101] and len(lost) == 1
    trace = seq_trace(segs, lost=lost)
    assert [(d.seq, d.retransmission) for d in trace.lost] == [(101, False)]
    assert dropped_segments(segs, []) == set()
    assert [segs[i].flags for i in dropped_segments(segs, [0], sender="server")] == ["SYN-ACK"]
    assert dropped_segments(segs, [999]) == set()   # a frame the capture never saw


def test_the_figure_draws_every_kind_and_computes_its_title():
    pkts = transfer(lost=1)
    segs = segments(pkts, roles={S[1]: "server"})
    fig = time_sequence(segs, lost=dropped_segments(segs, [3]))
    ax = fig.axes[0]
    assert ax.get_title() == "7 data segments, 1 retransmitted (fast retransmit)"
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["ACK: bytes received in order", "ACK + window: the receiver's limit",
                      "data segment, sent (5)", "data segment, retransmitted (1)",
                      "data segment, dropped by the link (1)", "duplicate ACK (4)"]
    zoomed = time_sequence(segs, between=(0.03, 0.05), title="zoom").axes[0]
    assert zoomed.get_xlim() == (30.0, 50.0) and zoomed.get_title() == "zoom"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no TCP data"):
        seq_trace(segments(transfer(lost=1)[:3], roles={S[1]: "server"}))
    segs = segments(transfer(lost=1), roles={S[1]: "server"})
    with pytest.raises(ValueError, match="sent no TCP segment"):
        seq_trace(segs, sender="nobody")
    with pytest.raises(ValueError, match="t0 < t1"):
        time_sequence(segs, between=(1.0, 0.5))


def test_a_lost_packet_s_arrow_stops_half_way_at_a_cross():
    from matplotlib.patches import FancyArrowPatch

    from labkit.views.ladder import ladder

    pkts = transfer(lost=1)
    segs = segments(pkts, roles={S[1]: "server"})
    lost = dropped_segments(segs, [3])
    ax = ladder(segs, lost=lost).axes[0]
    ends = [p._posA_posB[1][0] for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert [i for i, x in enumerate(ends) if x not in (0.0, 1.0)] == sorted(lost)
    assert ends[min(lost)] == 0.5
    assert [t.get_text() for t in ax.texts].count("✗") == 1
    plain = ladder(segs).axes[0]
    assert "✗" not in [t.get_text() for t in plain.texts]
