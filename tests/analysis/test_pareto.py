"""Accuracy against full cost: the Pareto front, marked in `tl compare`'s group table and drawn
as compare/pareto.png on the sweep's parent."""

import contextlib
import io
import math

from tests.helpers.logged_sweeps import Job, log_sweep
from tl.analysis import pareto
from tl.cli.main import main as tl_command


def test_the_front_holds_every_point_no_other_beats_on_both():
    points = [(10, 0.90), (5, 0.80), (20, 0.85), (1, 0.50), (30, 0.95)]
    # (20, 0.85) costs more than (10, 0.90) and is less accurate; every other trades one for the other
    assert pareto.front(points) == {0, 1, 3, 4}


def test_as_accurate_but_dearer_is_off_the_front():
    assert pareto.front([(10, 0.9), (12, 0.9)]) == {0}


def test_as_cheap_but_less_accurate_is_off_the_front():
    assert pareto.front([(10, 0.9), (10, 0.8)]) == {0}


def test_equal_points_are_both_on_the_front():
    assert pareto.front([(10, 0.9), (10, 0.9), (11, 0.5)]) == {0, 1}


def test_a_point_without_a_cost_is_never_on_the_front():
    assert pareto.front([(math.nan, 0.99), (10, 0.9)]) == {1}


def compare(uri, out):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = tl_command(["compare", "--tracking-uri", uri, "--out", str(out)])
    assert code == 0
    return stdout.getvalue()


def group_rows(text, dataset):
    block = text.split(f"Seed groups on {dataset}:")[1].split("\n\n")[0].splitlines()
    header = block[1]
    return header, {" ".join(line[3:].split()[:2]): line for line in block[2:] if not line.startswith("* the")}


def test_compare_marks_the_front_in_the_group_table_and_logs_pareto_png(store, tmp_path):
    jobs = [Job("lite0", "finetune", 0.95, seed=s, test_acc=0.97, total_seconds=300.0 + s, data_id="pets-0a1b2c3d")
            for s in (0, 1)]
    jobs += [Job("lite0", "freeze", 0.93, seed=s, test_acc=0.95, total_seconds=10.0 + s, data_id="pets-0a1b2c3d")
             for s in (0, 1)]
    jobs += [Job("resnet18", "finetune", 0.90, seed=s, test_acc=0.90, total_seconds=400.0, data_id="pets-0a1b2c3d")
             for s in (0, 1)]
    client, parent, _ = log_sweep(store, jobs)
    text = compare(store, tmp_path / "out")
    header, rows = group_rows(text, "pets-0a1b2c3d")
    assert "total s" in header and "pareto" in header
    assert rows["lite0 finetune"].split()[-2] == "front"  # the most accurate
    assert rows["lite0 freeze"].split()[-2] == "front"  # the cheapest
    assert "front" not in rows["resnet18 finetune"]  # dearer and worse than both
    png = tmp_path / "out" / "pareto.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "compare/pareto.png" in {a.path for a in client.list_artifacts(parent, "compare")}


def test_runs_without_total_seconds_are_costed_by_train_seconds_and_it_says_so(store, tmp_path):
    jobs = [Job("lite0", "finetune", 0.95, train_seconds=100.0), Job("lite0", "freeze", 0.90, train_seconds=1.0)]
    log_sweep(store, jobs)
    text = compare(store, tmp_path / "out")
    header, rows = group_rows(text, "imagefolder")
    assert "train s" in header and "total s" not in header
    assert rows["lite0 freeze"].split()[-2] == "front"
    assert "cost is train seconds: these runs logged no total_seconds" in text
