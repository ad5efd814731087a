"""`tl compare` ranks a sweep's runs, prints a backbone x strategy matrix, plots the val curves
and logs it all on the sweep's parent run."""

import contextlib
import io
from types import SimpleNamespace

import pytest

from tl.analysis import groups, render
from tl.tracking.runs import Row
from tl.cli.main import main as tl_command

pytestmark = pytest.mark.slow  # end to end: whole sweeps in subprocesses


@pytest.fixture(scope="module")
def compared(tiny_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    stdout = io.StringIO()  # capsys is per test; this runs once for the module
    with contextlib.redirect_stdout(stdout):
        code = tl_command(["compare", "--tracking-uri", tiny_sweep.uri, "--out", str(out)])
    return SimpleNamespace(code=code, stdout=stdout.getvalue(), out=out)


def test_compare_prints_one_row_per_run_ranked_with_the_best_marked(tiny_sweep, compared):
    assert compared.code == 0
    lines = compared.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "best val acc" in line and "model" in line)
    assert "best epoch" in lines[header] and "final val loss" in lines[header]
    assert "trainable / total params" in lines[header]
    rows = lines[header + 1:header + 3]
    by_id = {r.info.run_id: r for r in tiny_sweep.jobs.values()}
    shown = [by_id[row.split()[-1]] for row in rows]  # the run id ends each row
    assert {r.data.tags["tl.strategy"] for r in shown} == {"freeze", "finetune"}
    accs = [r.data.metrics["best_val_acc"] for r in shown]
    assert accs == sorted(accs, reverse=True)
    assert [f"{a:.4f}" in row for a, row in zip(accs, rows)] == [True, True]
    assert rows[0].startswith("*") and not rows[1].startswith("*")
    assert "11,177,538" in rows[0]  # resnet18 with a 2-class head


def test_compare_prints_a_backbone_by_strategy_matrix(tiny_sweep, compared):
    text = compared.stdout
    # the dataset's identity: its tl.data_id where runs log one, else its name
    data = tiny_sweep.jobs["freeze"].data.tags.get("tl.data_id", "imagefolder")
    assert f"Best val acc, backbone x strategy ({data}):" in text
    matrix = text.split(f"backbone x strategy ({data}):")[1].splitlines()
    assert matrix[1].split() == ["finetune", "freeze"]
    assert matrix[2].split()[:2] == ["resnet18", "(scratch)"]  # the sweep trains it from scratch


def test_compare_writes_the_table_and_figures(compared):
    files = {p.name: p for p in compared.out.iterdir()}
    assert set(files) == {"table.md", "runs.csv", "curves.png", "matrix.png", "pareto.png", "verdict.md"}
    for png in ("curves.png", "matrix.png", "pareto.png"):
        assert files[png].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| resnet18 (scratch) |" in files["table.md"].read_text()
    assert len(files["runs.csv"].read_text().splitlines()) == 3


def test_compare_logs_them_on_the_sweeps_parent_run(tiny_sweep, compared):
    logged = {a.path for a in tiny_sweep.client.list_artifacts(tiny_sweep.parent.info.run_id, "compare")}
    assert logged == {"compare/table.md", "compare/runs.csv", "compare/curves.png", "compare/matrix.png",
                      "compare/pareto.png", "compare/verdict.md"}


def test_compare_given_a_job_instead_of_its_sweep_names_the_sweep(tiny_sweep, capsys):
    job = tiny_sweep.jobs["freeze"].info.run_id
    assert tl_command(["compare", "--tracking-uri", tiny_sweep.uri, "--sweep", job]) == 2
    assert f"--sweep {tiny_sweep.parent.info.run_id}" in capsys.readouterr().err


def test_compare_in_an_empty_store_says_how_to_make_a_sweep(tmp_path, capsys):
    assert tl_command(["compare", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err


def row(model, strategy, acc, dataset="digits", varied=""):
    return Row("id", "name", "FINISHED", model, strategy, dataset, acc, 1, 0.5, 1.0, 1, 2, varied)


def matrices(rows):
    return {ds: (m.models, m.strategies, m.cells, m.what) for ds, m in render.matrices(groups.analyse(rows)).items()}


def test_the_matrix_holds_each_pairs_best_run_per_dataset():
    # runs of one pair that differ in another swept key (not the seed): the pair's best
    mats = matrices([row("vgg16", "freeze", 0.9, varied="optimizer.lr=0.1"),
                     row("vgg16", "freeze", 0.7, varied="optimizer.lr=0.01"), row("alexnet", "finetune", 0.8),
                     row("vgg16", "freeze", 0.1, dataset="cifar10")])
    models, strategies, cells, _ = mats["digits"]
    assert (models, strategies) == (["vgg16", "alexnet"], ["finetune", "freeze"])
    assert cells == {("vgg16", "freeze"): 0.9, ("alexnet", "finetune"): 0.8}
    assert mats["cifar10"][2] == {("vgg16", "freeze"): 0.1}
