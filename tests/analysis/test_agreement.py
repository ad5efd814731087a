"""Whether a `tl rank` ranking held: the correlation is taken with the statistic the sweep is
ranked by (each backbone's best group mean, test acc where there is one), Kendall's tau beside
Spearman, and a warning when too few backbones make either mean much."""

import pytest

from tests.helpers.rows import run
from tl.analysis import agreement, groups


def test_kendall_is_given_beside_spearman():
    assert agreement.kendall([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)  # 5 pairs agree, 1 not
    assert agreement.spearman([1, 2, 3], [3, 2, 1]) == -1.0


def test_fewer_than_five_backbones_come_with_a_warning():
    scores, results = {"a": 1.0, "b": 0.5, "c": 0.2}, {"a": 0.9, "b": 0.8, "c": 0.1}
    assert agreement.caveat(scores, results) == (
        "Kendall tau +1.00; only 3 backbones: a rank correlation over fewer than 5 means little either way "
        "(one swapped pair changes it a lot)")
    five = {k: float(i) for i, k in enumerate("abcde")}
    assert agreement.caveat(five, five) == "Kendall tau +1.00"


def test_the_results_are_each_backbones_best_group_mean_not_its_best_run():
    rows = [run("m1", "finetune", s, acc, 10.0) for s, acc in ((0, 0.99), (1, 0.50), (2, 0.50))]
    rows += [run("m2", "finetune", s, 0.80, 10.0) for s in (0, 1, 2)]
    rows += [run("m3", "finetune", s, 0.70, 10.0, varied=f"optimizer.lr=0.1 trainer.seed={s}") for s in (0, 1)]
    rows += [run("m3", "finetune", s, 0.75, 10.0, varied=f"optimizer.lr=0.01 trainer.seed={s}") for s in (0, 1)]
    (ds,) = groups.analyse(rows).values()
    got = agreement.results(ds, "finetune")
    assert got == pytest.approx({"m2": 0.80, "m3": 0.75, "m1": (0.99 + 0.5 + 0.5) / 3})

