"""The link's model on its own (no sockets): settings checked, fates seeded and right."""

import math
import random
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


# The statistical tests below draw fresh seeds on every run, so they test the model, not
# one sequence of random numbers; each says the chance that it fails an honest model
# (its false-failure rate), and names its seeds when it fails, so the run can be repeated.
ALPHA = 1e-6  # the false-failure rate of each statistical check


def fresh_seeds(count: int) -> list[int]:
    return [random.SystemRandom().randrange(2**31) for _ in range(count)]


def binomial_bound(n: int, p: float, alpha: float = ALPHA) -> float:
    """t such that a Binomial(n, p) count is further than t from n·p with probability at
    most ``alpha`` (Bernstein's inequality: a bound, not an approximation)."""
    variance, log_term = n * p * (1 - p), math.log(2 / alpha)
    return log_term / 3 + math.sqrt((log_term / 3) ** 2 + 2 * variance * log_term)


@pytest.mark.parametrize("p", [0.001, 0.01, 0.1])
def test_random_loss_is_binomial(p):
    seeds, n = fresh_seeds(10), 20_000
    dropped = sum(f.kind == "dropped" for seed in seeds
                  for f in fates(Impairment(loss=p, seed=seed), n))
    bound = binomial_bound(10 * n, p)
    assert abs(dropped - 10 * n * p) <= bound, (
        f"{dropped} of {10 * n} frames dropped at loss={p}: expected {10 * n * p:.0f} ± "
        f"{bound:.0f} (fails an honest model with probability < {ALPHA}); seeds {seeds}")


def test_the_same_seed_drops_the_same_frames_and_another_seed_others():
    seed = fresh_seeds(1)[0]
    dropped = [f.number for f in fates(Impairment(loss=0.01, seed=seed), 10_000)
               if f.kind == "dropped"]
    again = [f.number for f in fates(Impairment(loss=0.01, seed=seed), 10_000)
             if f.kind == "dropped"]
    other = [f.number for f in fates(Impairment(loss=0.01, seed=seed + 1), 10_000)
             if f.kind == "dropped"]
    assert again == dropped and other != dropped, f"seed {seed}"


def test_golden_the_lessons_seeds_drop_the_frames_the_lessons_name():
    """Golden values, not statistics: notebook 09's text names these frames (seed 58 drops
    the client's frame 3, ...). A change to the model's use of random numbers breaks them:
    then re-choose the seeds in the lesson and here together."""
    def drops(seed, loss, frames):
        model = LinkModel(Impairment(delay=0.020, loss=loss, seed=seed), stream=0)
        return [n for n in range(frames) if model.admit(0.0, 1000).kind == "dropped"]

    assert drops(58, 0.05, 40) == [3]  # the fast-retransmit demo
    assert drops(369, 0.05, 40) == [9]  # the timeout demo
    assert 200 not in drops(5, 0.05, 201)  # the UDP cell's end marker gets through
    immediate = LinkModel(Impairment(loss=0.05, seed=58), stream=0)  # no delay: same draws
    assert [n for n in range(40) if immediate.lost()] == [3]


def test_each_direction_has_its_own_random_sequence():
    imp = Impairment(loss=0.3, seed=1)
    up, down = LinkModel(imp, stream=0), LinkModel(imp, stream=1)
    assert [up.lost() for _ in range(50)] != [down.lost() for _ in range(50)]


def loss_runs(kinds: list[str]) -> list[int]:
    runs, length = [], 0
    for kind in kinds:
        if kind == "dropped":
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_gilbert_elliott_loss_comes_in_bursts_at_its_mean_rate():
    burst = GilbertElliott(p=0.01, r=0.25)
    assert burst.mean_loss == pytest.approx(0.01 / 0.26)
    seeds, n = fresh_seeds(10), 20_000
    kinds = [f.kind for seed in seeds for f in fates(Impairment(burst=burst, seed=seed), n)]
    # the bad state's share is a two-state Markov chain's: its sum over N frames has
    # variance ≈ N·π(1-π)·(1+rho)/(1-rho), rho = 1-p-r; 5 standard deviations: a normal
    # approximation's false-failure rate 6e-7
    pi, rho, total = burst.mean_loss, 1 - burst.p - burst.r, len(kinds)
    spread = 5 * math.sqrt(total * pi * (1 - pi) * (1 + rho) / (1 - rho))
    lost = kinds.count("dropped")
    assert abs(lost - total * pi) <= spread, (
        f"{lost} of {total} lost: expected {total * pi:.0f} ± {spread:.0f}; seeds {seeds}")
    # bad runs are geometric, mean 1/r = 4, variance (1-r)/r² = 12
    runs = loss_runs(kinds)
    spread = 5 * math.sqrt((1 - burst.r) / burst.r**2 / len(runs))
    mean = sum(runs) / len(runs)
    assert abs(mean - 1 / burst.r) <= spread, (
        f"mean burst {mean:.2f} frames over {len(runs)} bursts: expected 4 ± {spread:.2f}; "
        f"seeds {seeds}")
    # random loss at the same rate comes one frame at a time (mean run 1/(1-p) ≈ 1.04)
    single = loss_runs([f.kind for f in fates(Impairment(loss=pi, seed=seeds[0]), n)])
    assert sum(single) / len(single) < 1.5, f"seed {seeds[0]}"


def test_burst_accepts_a_dict_or_a_tuple():
    assert Impairment(burst={"p": 0.1, "r": 0.5}).burst == GilbertElliott(0.1, 0.5)
    assert Impairment(burst=(0.1, 0.5, 0.9)).burst == GilbertElliott(0.1, 0.5, 0.9)


def test_jitter_spreads_the_delay_normally_around_it():
    seed, n = fresh_seeds(1)[0], 4000
    # a second apart: no frame waits for the one before, each delay is its own draw
    due = [f.due for f in fates(Impairment(delay=0.05, jitter=0.01, seed=seed), n, gap=1.0)]
    delays = [d - number for number, d in enumerate(due)]
    mean = sum(delays) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in delays) / (n - 1))
    # 5 standard errors of the mean (0.01/√n) and of the sd (≈ 0.01/√(2n)): 6e-7 each
    assert abs(mean - 0.05) < 5 * 0.01 / math.sqrt(n), f"mean {mean}, seed {seed}"
    assert abs(sd - 0.01) < 5 * 0.01 / math.sqrt(2 * n), f"sd {sd}, seed {seed}"


def test_jitter_never_makes_a_delay_negative():
    seed, n = fresh_seeds(1)[0], 4000
    # jitter twice the delay: a normal draw is below zero in 31 % of frames
    due = [f.due for f in fates(Impairment(delay=0.005, jitter=0.01, seed=seed), n, gap=1.0)]
    delays = [round(d - number, 9) for number, d in enumerate(due)]
    assert min(delays) == 0.0, f"{min(delays)}, seed {seed}"  # a negative draw: no delay
    zero = delays.count(0.0)
    bound = binomial_bound(n, 0.3085)
    assert abs(zero - n * 0.3085) <= bound, f"{zero} of {n} frames had no delay, seed {seed}"


def test_jitter_never_reorders_frames():
    seed = fresh_seeds(1)[0]
    # a frame every ms, jitter 10 ms: without the rule, about half would overtake
    due = [f.due for f in fates(Impairment(delay=0.05, jitter=0.01, seed=seed), 10_000,
                                gap=0.001)]
    assert due == sorted(due), f"seed {seed}"
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
    seeds, n = fresh_seeds(4), 10_000
    result = [f for seed in seeds
              for f in fates(Impairment(duplicate=0.1, reorder=0.05, seed=seed), n)]
    for name, p, count in (("duplicate", 0.1, sum(f.duplicate for f in result)),
                           ("reorder", 0.05, sum(f.hold for f in result))):
        bound = binomial_bound(len(result), p)
        assert abs(count - len(result) * p) <= bound, (
            f"{count} of {len(result)} frames marked {name}: expected "
            f"{len(result) * p:.0f} ± {bound:.0f}; seeds {seeds}")


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
