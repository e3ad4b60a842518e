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


def test_the_timer_runs_from_the_last_ack_of_new_data_whatever_came_after():
    # the last segment lost; the server's echo data repeats the old ACK number meanwhile
    pkts = transfer(lost=5, rto=0.25)
    resend = pkts[-2]
    pkts.insert(-2, tcp(S, C, "PA", ISN_S + 1, ISN_C + 1 + 5 * MSS, b"echo", t=resend.time - 0.1))
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert trace.recovery() == ["timeout"]


def test_without_sack_a_window_update_is_not_a_duplicate_ack():
    # after the hole the server sends data (its sequence number moves on), then ACKs: the
    # first pure ACK after its data is a window update for the sender, as is a bigger window
    pkts = transfer(lost=1, n=7)
    acks = [i for i, p in enumerate(pkts) if p.sport == S[1] and not len(p["TCP"].payload)]
    third, fourth = acks[3], acks[4]   # the 2nd and 3rd ACKs after the hole
    pkts.insert(third, tcp(S, C, "PA", ISN_S + 1, ISN_C + 1 + MSS, b"data", t=pkts[third].time))
    for p in pkts[third + 1:]:
        if p.sport == S[1]:
            p["TCP"].seq = ISN_S + 5          # after its 4 bytes of data
    pkts[fourth + 1]["TCP"].window = 2000   # and one ACK offers a bigger window
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert [a.duplicate for a in trace.acks if a.ack == 101] == [
        False, True, False, False, False, True, True]


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
    assert [(lost.seq, resent.seq, resent.retransmission) for lost, resent in trace.repairs()] \
        == [(101, 101, True)]
    assert seq_trace(segs).repairs() == []   # the link's drops not given: none known
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


def sack_transfer(acks: list[int], *, resend_after: float = 0.0005):
    """With SACK: the client sends 6 segments, the 2nd is lost, and the server's ACKs after
    the hole SACK segments 3.. : ``acks`` says how many segments each of them reports
    (a busy receiver may report several in one ACK). The client resends the hole
    ``resend_after`` s after the last of those ACKs."""
    syn = [tcp(C, S, "S", ISN_C, t=0.0, options=[("MSS", MSS), ("SAckOK", b"")]),
           tcp(S, C, "SA", ISN_S, ISN_C + 1, t=0.01, options=[("MSS", MSS), ("SAckOK", b"")]),
           tcp(C, S, "A", ISN_C + 1, ISN_S + 1, t=0.02)]
    pkts = list(syn)
    for i in range(6):
        pkts.append(tcp(C, S, "PA", ISN_C + 1 + i * MSS, ISN_S + 1, b"x" * MSS, t=0.03 + i / 1e4,
                        ip_id=10 + i))
    hole, t = ISN_C + 1 + MSS, 0.04
    pkts.append(tcp(S, C, "A", ISN_S + 1, hole, t=t))          # the 1st segment arrived
    reported = 0
    for n in acks:
        reported += n
        t += 0.001
        pkts.append(tcp(S, C, "A", ISN_S + 1, hole, t=t,
                        options=[("SAck", (hole + MSS, hole + MSS + reported * MSS))]))
    pkts.append(tcp(C, S, "PA", hole, ISN_S + 1, b"x" * MSS, t=t + resend_after, ip_id=99))
    return pkts


def test_with_sack_the_segments_reported_count_not_the_acks():
    # one ACK per segment: the third duplicate ACK reports the third segment past the hole
    trace = seq_trace(segments(sack_transfer([1, 1, 1]), roles={S[1]: "server"}))
    retx = trace.retransmissions[0]
    assert trace.sack and trace.dup_acks_before(retx) == 3 and trace.reported_beyond(retx) == 3
    assert trace.recovery() == ["fast retransmit"]
    # a busy receiver's one ACK for three segments: Linux resends after it, and so do we
    merged = seq_trace(segments(sack_transfer([1, 3]), roles={S[1]: "server"}))
    retx = merged.retransmissions[0]
    assert merged.dup_acks_before(retx) == 2 and merged.reported_beyond(retx) == 4
    assert merged.recovery() == ["fast retransmit"]
    assert merged.acks[1].sacked == ((201, 301),)   # relative numbers, as the data's


def test_with_sack_a_second_hole_is_reported_by_the_acks_asking_for_the_first():
    # segments 2 and 4 of 8 lost (1-based); the server's ACKs ask for 2 and SACK 3, 5, 6, ...
    syn = sack_transfer([1])[:3]
    pkts, hole, second = list(syn), ISN_C + 1 + MSS, ISN_C + 1 + 3 * MSS
    for i in range(8):
        pkts.append(tcp(C, S, "PA", ISN_C + 1 + i * MSS, ISN_S + 1, b"x" * MSS,
                        t=0.03 + i / 1e4, ip_id=10 + i))
    pkts.append(tcp(S, C, "A", ISN_S + 1, hole, t=0.04))
    blocks = [(hole + MSS, hole + 2 * MSS)]
    for i, t in enumerate([0.041, 0.042, 0.043, 0.044, 0.045]):
        if i:   # segments 5.. arrive: a second block above the second hole
            blocks = [blocks[0], (second + MSS, second + MSS + i * MSS)]
        pkts.append(tcp(S, C, "A", ISN_S + 1, hole, t=t,
                        options=[("SAck", tuple(x for block in blocks for x in block))]))
    pkts.append(tcp(C, S, "PA", hole, ISN_S + 1, b"x" * MSS, t=0.0455, ip_id=98))
    pkts.append(tcp(C, S, "PA", second, ISN_S + 1, b"x" * MSS, t=0.046, ip_id=99))
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    _, then = trace.retransmissions
    assert trace.dup_acks_before(then) == 0        # no ACK asked for it: they asked for the first
    assert trace.reported_beyond(then) == 4 and trace.recovery() == ["fast retransmit"] * 2


def test_with_sack_one_segment_reported_then_a_quick_resend_is_rack_s_clock_not_the_count():
    trace = seq_trace(segments(sack_transfer([1], resend_after=0.010), roles={S[1]: "server"}))
    assert trace.reported_beyond(trace.retransmissions[0]) == 1
    assert trace.recovery() == ["early retransmit"]


def test_without_sack_the_first_ack_after_the_handshake_is_a_window_update():
    # the very first data segment lost: the server's ACKs all ask for byte 1, as its SYN-ACK
    # did, but the first also moves its own sequence number past its SYN: Linux's sender
    # takes it as a window update, and counts the ones after it
    pkts = transfer(lost=0, n=4)
    trace = seq_trace(segments(pkts, roles={S[1]: "server"}))
    assert [a.duplicate for a in trace.acks][:3] == [False, True, True]
    assert trace.dup_acks_before(trace.retransmissions[0]) == 2
