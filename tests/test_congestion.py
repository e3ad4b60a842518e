"""TCP_INFO from a real socket, the throughput models, and the figures drawn from them."""

import math
import socket

import pytest

from labkit import ByteCounter, TCPServer
from labkit.capture.tcpinfo import CwndSampler, TcpInfo, tcp_info
from labkit.views.congestion import (
    backoffs,
    bufferbloat_figure,
    cwnd_figure,
    mathis_figure,
    per_round_trip,
    ramp_figure,
    transfer_time_figure,
)
from labkit.views.models import mathis_throughput, slow_start_rounds, transfer_time


# -- TCP_INFO ---------------------------------------------------------------------------------
def test_tcp_info_reads_the_kernels_view_of_a_connection():
    with TCPServer(handler=ByteCounter()) as server, \
            socket.create_connection(server.address) as sock:
        first = tcp_info(sock)
        assert first.cwnd >= 1 and first.mss > 0 and first.ca_state == "open"
        assert first.ssthresh > first.cwnd and first.in_slow_start   # no loss yet
        assert 0 < first.rtt < 1 and first.rto >= 0.2                # Linux's minimum RTO
        with CwndSampler(sock, interval=0.001) as sampler:
            for _ in range(50):
                sock.sendall(b"x" * 65536)
        assert len(sampler.samples) >= 2
        assert [s.t for s in sampler.samples] == sorted(s.t for s in sampler.samples)
        assert sampler.samples[-1].bytes_acked > first.bytes_acked   # the kernel counted them


def test_tcp_info_refuses_what_is_not_a_tcp_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(TypeError, match="TCP socket"):
            tcp_info(udp)
    with pytest.raises(ValueError, match="interval"):
        CwndSampler(socket.socket(), interval=0)


def test_a_sampler_runs_one_block():
    with TCPServer(handler=ByteCounter()) as server, \
            socket.create_connection(server.address) as sock:
        sampler = CwndSampler(sock)
        with sampler:
            pass
        with pytest.raises(RuntimeError, match="one `with` block"):
            sampler.__enter__()


# -- models -----------------------------------------------------------------------------------
def test_mathis_at_one_percent_and_40_ms():
    rate = mathis_throughput(mss=1448, rtt=0.040, loss=0.01)
    assert rate == pytest.approx(1448 / 0.040 * math.sqrt(1.5) / 0.1)
    assert rate * 8 / 1e6 == pytest.approx(3.547, abs=0.001)
    # four times the loss, half the rate; twice the RTT, half the rate
    assert mathis_throughput(mss=1448, rtt=0.040, loss=0.04) == pytest.approx(rate / 2)
    assert mathis_throughput(mss=1448, rtt=0.080, loss=0.01) == pytest.approx(rate / 2)


@pytest.mark.parametrize("kwargs, field", [
    (dict(mss=1448, rtt=0.04, loss=0), "loss"), (dict(mss=1448, rtt=0.04, loss=1.5), "loss"),
    (dict(mss=1448, rtt=-1, loss=0.01), "rtt"), (dict(mss=True, rtt=0.04, loss=0.01), "mss")])
def test_mathis_names_a_bad_argument(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must"):
        mathis_throughput(**kwargs)


def test_slow_start_adds_round_trips_to_the_bytes_time_on_the_link():
    rtt, rate = 0.040, 12.5e6                      # 100 Mbit/s, 40 ms

    def no_ramp(nbytes):                           # handshake, B / rate, the answer's trip
        return rtt + nbytes / rate + rtt

    assert slow_start_rounds(14480) == 1           # 10 segments: the initial window
    assert slow_start_rounds(14481) == 2
    assert transfer_time(1000, rtt=rtt, rate=rate) == pytest.approx(no_ramp(1000))
    mid = 1_000_000                                # 6 doublings before the window fills the pipe
    assert transfer_time(mid, rtt=rtt, rate=rate) > no_ramp(mid) + 4 * rtt
    huge = 10**9                                   # the ramp is a rounding error at this size
    assert transfer_time(huge, rtt=rtt, rate=rate) == pytest.approx(no_ramp(huge), rel=0.01)


def test_per_round_trip_reads_the_kernels_delivery_rate_once_per_round_trip():
    samples = [info(0.01 * i, 10) for i in range(10)]
    samples = [s.__class__(**{**s.__dict__, "delivery_rate": 1000.0 * i})
               for i, s in enumerate(samples)]
    times, rates = per_round_trip(samples, rtt=0.04)
    assert times == pytest.approx([0.04, 0.08]) and rates == [4000.0, 8000.0]
    with pytest.raises(ValueError, match="rtt > 0"):
        per_round_trip(samples, rtt=0)


def test_a_sampler_says_when_the_machine_made_it_look_late():
    sampler = CwndSampler(socket.socket(), interval=0.002)
    sampler.samples = [info(t, 10) for t in (0.0, 0.002, 0.0045, 0.0065)]
    assert sampler.too_busy() is None                      # 0.5 ms late at worst
    sampler.samples.append(info(0.0465, 20))               # 38 ms late
    assert sampler.too_busy() == (
        "this machine was too busy for this measurement: TCP_INFO, due every 2 ms, was read "
        "up to 38 ms late, so the samples below are the machine's, not the connection's — run "
        "it again when it is quieter")
    assert sampler.too_busy(tolerance=0.05) is None
    with pytest.raises(ValueError, match="tolerance must be seconds"):
        sampler.too_busy(tolerance=-1)
    sampler.sock.close()


# -- figures ----------------------------------------------------------------------------------
def info(t, cwnd, ssthresh=2**31 - 1, retrans=0):
    return TcpInfo(t=t, ca_state="open", cwnd=cwnd, ssthresh=ssthresh, mss=1448, rtt=0.04,
                   rttvar=0.01, rto=0.2, retransmits=0, total_retrans=retrans, lost=0,
                   unacked=cwnd, bytes_acked=0, delivery_rate=0.0)


def test_cwnd_figure_marks_slow_start_and_the_back_off():
    samples = [info(0.04 * i, 10 * 2**i) for i in range(4)]           # 10, 20, 40, 80
    samples += [info(0.17, 40, ssthresh=40, retrans=1), info(0.21, 41, ssthresh=40, retrans=1)]
    assert [(a.cwnd, b.ssthresh) for a, b in backoffs(samples)] == [(80, 40)]
    ax = cwnd_figure(samples).axes[0]
    assert ax.get_title() == ("cwnd grew to 80 segments; 1 back-off(s), the first at cwnd 80 "
                              "→ ssthresh 40")
    assert "slow start" in ax.get_legend_handles_labels()[1]
    with pytest.raises(ValueError, match="at least 2"):
        cwnd_figure(samples[:1])


def test_mathis_figure_title_says_how_far_measurement_is_from_the_model():
    model = {p: mathis_throughput(mss=1448, rtt=0.04, loss=p) for p in (0.01, 0.04)}
    fig = mathis_figure({0.01: model[0.01] * 0.5, 0.04: model[0.04] * 0.8}, mss=1448,
                        rtt=0.04, by_rtt={0.02: 1e6, 0.08: 3e5}, loss=0.01)
    assert fig._suptitle.get_text() == "Measured / Mathis: 0.50 to 0.80 over 1-4 % loss"
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="loss= with by_rtt"):
        mathis_figure(model, mss=1448, rtt=0.04, by_rtt={0.02: 1.0})


def test_bufferbloat_transfer_time_and_ramp_figures_compute_their_titles():
    ax = bufferbloat_figure({"10 packets": [0.021, 0.022, 0.023],
                             "1000 packets": [0.09, 0.1, 0.11]}, base_rtt=0.02).axes[0]
    assert ax.get_title() == ("Median RTT under load: 22 ms with 10 packets, "
                              "100 ms with 1000 packets")
    ax = transfer_time_figure([1000, 10**6], [0.061, 0.4], [0.06, 0.14], [0.06, 0.38]).axes[0]
    assert ax.get_title() == ("Ts + Tt + Tr misses by 2.9× at 1,000,000 bytes; "
                              "the transfer itself explains it")
    assert ax.get_legend_handles_labels()[1][1].startswith("T = Ts + Tt + Tr (processing")
    ax = ramp_figure([0.04, 0.08, 0.12, 0.16], [1e5, 2e5, 4e5, 4e5], rtt=0.04,
                     link_rate=5e5).axes[0]
    assert ax.get_title() == "Slow start: the rate doubled 2 times, then reached 3 Mbit/s"
    full = ramp_figure([0.04, 0.08, 0.12], [1e5, 2e5, 4.9e5], rtt=0.04, link_rate=5e5).axes[0]
    assert full.get_title() == "Slow start: the rate doubled 2 times, then filled the 4 Mbit/s link"
    assert ax.get_legend_handles_labels()[1][0] == "the link's rate, 4 Mbit/s"
    with pytest.raises(ValueError, match="as many rates as times"):
        ramp_figure([0.04], [1e5, 2e5], rtt=0.04)
