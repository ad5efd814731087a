"""The replicate statistics of `tl compare` against values computed by hand: Student t
intervals, the paired t-test over shared seeds, Welch's test without shared seeds, and what
happens with one seed."""

import math

import pytest

from tl.analysis import stats

# Two-sided 95% Student t critical values from printed tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
T_TABLE_975 = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262}


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_the_interval_is_the_mean_plus_minus_t_times_the_standard_error(n):
    values = [0.90 + 0.01 * i for i in range(n)]
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    got = stats.interval(values)
    assert got.n == n and got.mean == pytest.approx(mean)
    assert got.half_width == pytest.approx(T_TABLE_975[n - 1] * sd / math.sqrt(n), rel=1e-3)
    assert (got.low, got.high) == pytest.approx((mean - got.half_width, mean + got.half_width))


def test_three_seeds_give_a_known_interval():
    got = stats.interval([0.90, 0.92, 0.94])  # sd 0.02, t(2) = 4.303
    assert got.mean == pytest.approx(0.92)
    assert got.half_width == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)  # 0.0497


def test_one_seed_has_no_interval():
    got = stats.interval([0.93])
    assert (got.mean, got.n, got.half_width, got.low, got.high) == (0.93, 1, None, None, None)


def test_a_higher_confidence_widens_the_interval():
    values = [0.90, 0.92, 0.95, 0.91]
    assert stats.interval(values, 0.99).half_width > stats.interval(values, 0.95).half_width


@pytest.mark.parametrize("confidence", [0, 1, 1.5, math.nan])
def test_a_confidence_outside_0_1_is_refused(confidence):
    with pytest.raises(ValueError, match="confidence"):
        stats.interval([0.9, 0.8], confidence)


def test_the_paired_t_test_matches_the_closed_form_for_two_degrees_of_freedom():
    best = {0: [0.90], 1: [0.92], 2: [0.95]}
    other = {0: [0.88], 1: [0.91], 2: [0.91]}
    d = [0.02, 0.01, 0.04]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t = mean / (sd / math.sqrt(3))
    p = 1 - t / math.sqrt(2 + t * t)  # Student t with 2 df: two-sided p has this closed form
    got = stats.compare(best, other)
    assert (got.method, got.n) == ("paired t-test", 3)
    assert got.p == pytest.approx(p, rel=1e-9)  # ~0.118: indistinguishable at 0.05
    assert got.indistinguishable(0.05) is True


def test_pairing_by_seed_separates_a_small_consistent_gap_that_seed_noise_hides():
    # seed 0 is a hard split for both, seed 2 an easy one; `other` is 0.5 points worse on each
    best = {0: [0.800], 1: [0.900], 2: [0.950], 3: [0.870]}
    other = {0: [0.794], 1: [0.896], 2: [0.944], 3: [0.866]}
    paired = stats.compare(best, other)
    assert paired.method == "paired t-test" and paired.indistinguishable(0.05) is False
    unpaired = stats.compare({s + 10: v for s, v in best.items()}, other)  # no shared seed: Welch
    assert unpaired.method == "Welch t-test" and unpaired.indistinguishable(0.05) is True


def test_only_the_seeds_both_groups_ran_are_paired():
    got = stats.compare({0: [0.9], 1: [0.91], 2: [0.92]}, {1: [0.90], 2: [0.90], 3: [0.5]})
    assert (got.method, got.n) == ("paired t-test", 2)


def test_without_shared_seeds_welch_matches_its_formula():
    a, b = [0.90, 0.92, 0.94], [0.85, 0.90]
    ma, mb = sum(a) / 3, sum(b) / 2
    va = sum((x - ma) ** 2 for x in a) / 2 / 3
    vb = sum((x - mb) ** 2 for x in b) / 1 / 2
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)  # Welch-Satterthwaite
    from scipy.stats import t as student

    got = stats.compare({0: [a[0]], 1: [a[1]], 2: [a[2]]}, {5: [b[0]], 6: [b[1]]})
    assert (got.method, got.n) == ("Welch t-test", 2)
    assert got.p == pytest.approx(2 * student.sf(abs(t), df), rel=1e-9)


def test_one_seed_on_either_side_gives_no_test():
    got = stats.compare({0: [0.95]}, {0: [0.60]})
    assert got.p is None and got.indistinguishable(0.05) is None
    assert "fewer than 2 seeds" in got.method


def test_identical_results_on_every_seed_are_indistinguishable():
    got = stats.compare({0: [0.9], 1: [0.8]}, {0: [0.9], 1: [0.8]})
    assert got.p == 1.0 and got.indistinguishable(0.05) is True


def test_the_same_gap_on_every_seed_is_a_real_difference():
    got = stats.compare({0: [0.9], 1: [0.8], 2: [0.7]}, {0: [0.85], 1: [0.75], 2: [0.65]})
    assert got.p == 0.0 and got.indistinguishable(0.05) is False
