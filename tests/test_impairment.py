"""The link's model on its own (no sockets): settings checked, fates seeded and right."""

import math
from importlib import resources

import pytest

from labkit.net.impairment import GilbertElliott, Impairment, LinkModel


@pytest.mark.parametrize("settings, field", [
    ({"delay": -0.01}, "delay"),
    ({"delay": "20ms"}, "delay"),
    ({"jitter": float("nan")}, "jitter"),
    ({"loss": 1.5}, "loss"),
    ({"loss": True}, "loss"),
    ({"duplicate": -0.1}, "duplicate"),
    ({"reorder": 2}, "reorder"),
    ({"rate": 0}, "rate"),
    ({"rate": 1e6, "queue": 1000}, "smaller than one MTU"),
    ({"rate": 1e6, "queue": "ten packets"}, "queue"),
    ({"rate": 1e6, "queue": "0 packets"}, "at least 1 packet"),
    ({"queue": 100_000}, "give rate="),
    ({"mtu": 20}, "mtu"),
    ({"trace": []}, "no delivery opportunities"),
    ({"trace": [5, 3]}, "not less than the one before"),
    ({"trace": [0]}, "must end after 0 ms"),
    ({"trace": "/nonexistent.trace"}, "does not exist"),
    ({"trace": [1, 2], "rate": 1e6}, "not both"),
    ({"loss": 0.1, "burst": (0.1, 0.5)}, "not both"),
    ({"burst": (0.1, 0)}, "burst.r"),
    ({"burst": "heavy"}, "burst must be"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_settings_raise_a_value_error_naming_them(settings, field):
    with pytest.raises(ValueError, match=field):
        Impairment(**settings)


def test_a_bad_trace_file_names_its_line(tmp_path):
    trace = tmp_path / "bad.trace"
    trace.write_text("1\n2\nthree\n")
    with pytest.raises(ValueError, match=r"bad\.trace line 3"):
        Impairment(trace=trace)


def fates(impairment, frames=100_000, size=1000, gap=0.0):
    model = LinkModel(impairment)
    return [model.admit(number * gap, size) for number in range(frames)]


@pytest.mark.parametrize("p", [0.001, 0.01, 0.1])
def test_random_loss_is_binomial_and_the_seed_repeats_it(p):
    dropped = [f.number for f in fates(Impairment(loss=p, seed=5)) if f.kind == "dropped"]
    n = 100_000
    # 99.9 % binomial interval (normal approximation), so an honest model fails 1 in 1000
    spread = 3.3 * math.sqrt(n * p * (1 - p))
    assert abs(len(dropped) - n * p) < spread
    again = [f.number for f in fates(Impairment(loss=p, seed=5)) if f.kind == "dropped"]
    assert again == dropped
    other = [f.number for f in fates(Impairment(loss=p, seed=6)) if f.kind == "dropped"]
    assert other != dropped


def test_each_direction_has_its_own_random_sequence():
    imp = Impairment(loss=0.3, seed=1)
    up, down = LinkModel(imp, stream=0), LinkModel(imp, stream=1)
    assert [up.lost() for _ in range(50)] != [down.lost() for _ in range(50)]


def test_gilbert_elliott_loss_comes_in_bursts_at_its_mean_rate():
    burst = GilbertElliott(p=0.01, r=0.25)
    kinds = [f.kind for f in fates(Impairment(burst=burst, seed=2))]
    lost = kinds.count("dropped") / len(kinds)
    assert burst.mean_loss == pytest.approx(0.01 / 0.26)
    assert lost == pytest.approx(burst.mean_loss, rel=0.15)
    runs, length = [], 0
    for kind in kinds:
        if kind == "dropped":
            length += 1
        elif length:
            runs.append(length)
            length = 0
    assert sum(runs) / len(runs) == pytest.approx(4, rel=0.15)  # mean burst 1/r
    random_runs = [f.kind for f in fates(Impairment(loss=lost, seed=2))]
    assert random_runs.count("dropped") == pytest.approx(kinds.count("dropped"), rel=0.15)


def test_burst_accepts_a_dict_or_a_tuple():
    assert Impairment(burst={"p": 0.1, "r": 0.5}).burst == GilbertElliott(0.1, 0.5)
    assert Impairment(burst=(0.1, 0.5, 0.9)).burst == GilbertElliott(0.1, 0.5, 0.9)


def test_delay_and_jitter_keep_frames_in_order():
    due = [f.due for f in fates(Impairment(delay=0.05, jitter=0.01, seed=3), 10_000, gap=0.001)]
    assert due == sorted(due)
    delays = [d - n * 0.001 for n, d in enumerate(due)]
    assert min(delays) >= 0.05 - 0.05 and max(delays) > 0.06  # spread, never negative
    plain = fates(Impairment(delay=0.05), 3, gap=1.0)
    assert [f.due for f in plain] == [0.05, 1.05, 2.05]


def test_rate_serialises_and_a_full_queue_drops_at_the_tail():
    # 1500-byte packets at 12 Mbit/s: 1 ms each; 10 arrive at once into a 4-packet queue
    model = LinkModel(Impairment(rate=12e6, queue="4 packets"))
    result = [model.admit(0.0, 1500) for _ in range(10)]
    assert [f.kind for f in result] == ["delivered"] * 4 + ["queue_dropped"] * 6
    assert [round(f.due, 6) for f in result[:4]] == [0.001, 0.002, 0.003, 0.004]
    later = model.admit(0.0025, 1500)  # two have left by then: room again
    assert later.kind == "delivered" and later.due == pytest.approx(0.005)


def test_a_byte_queue_counts_bytes():
    model = LinkModel(Impairment(rate=12e6, queue=3000))
    assert [model.admit(0.0, 1500).kind for _ in range(3)] == [
        "delivered", "delivered", "queue_dropped"]
    assert model.admit(0.0, 100).kind == "queue_dropped"


def test_a_trace_delivers_1500_bytes_per_opportunity_and_loops():
    model = LinkModel(Impairment(trace=[2, 2, 5]))  # period 5 ms
    due = [round(model.admit(0.0, 1500).due * 1000, 6) for _ in range(5)]
    assert due == [2, 2, 5, 7, 7]
    small = LinkModel(Impairment(trace=[10]))
    assert {round(small.admit(0.0, 500).due, 6) for _ in range(3)} == {0.01}  # one shares
    assert round(small.admit(0.0, 500).due, 6) == 0.02


def test_an_unused_opportunity_is_lost():
    model = LinkModel(Impairment(trace=[1, 2, 3, 4]))
    model.admit(0.0, 1500)  # starts the trace's clock
    assert model.admit(0.0035, 1500).due == pytest.approx(0.004)


def test_mtu_drops_bigger_frames():
    model = LinkModel(Impairment(mtu=1000))
    assert model.admit(0.0, 1001).kind == "dropped"
    assert model.admit(0.0, 1000).kind == "delivered"


def test_duplicate_and_reorder_are_marked_at_their_rates():
    result = fates(Impairment(duplicate=0.1, reorder=0.05, seed=9), 20_000)
    assert sum(f.duplicate for f in result) / 20_000 == pytest.approx(0.1, rel=0.1)
    assert sum(f.hold for f in result) / 20_000 == pytest.approx(0.05, rel=0.1)


def test_transparent_only_without_delay_or_reordering():
    assert Impairment(loss=0.5).transparent
    assert not Impairment(delay=0.001).transparent
    assert not Impairment(reorder=0.1).transparent
    assert not Impairment(rate=1e6).transparent


@pytest.mark.parametrize("name", ["cellular-walk.trace", "steady-12mbit.trace"])
def test_shipped_traces_load(name):
    path = resources.files("labkit") / "data" / "traces" / name
    imp = Impairment(trace=str(path))
    assert len(imp.opportunities) > 100
    assert imp.opportunities == tuple(sorted(imp.opportunities))
