"""`tl compare` keys its rows, groups and matrices by what a run saw and started from: one
matrix per dataset identity (never two datasets pooled), pretrained and scratch backbones
labelled apart, and runs that differ only in their seed grouped as replicates."""

import contextlib
import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import make_image_folder
from tests.helpers.logged_sweeps import Job, log_sweep
from tl.analysis import groups, render
from tl.cli.main import main as tl_command


def compare(uri, *args):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = tl_command(["compare", "--tracking-uri", uri, *args])
    assert code == 0
    return stdout.getvalue()


def matrix_block(text, dataset):
    """The matrix printed for one dataset: its strategy header and one line per backbone."""
    lines = text.split(f"backbone x strategy ({dataset}):\n")[1].split("\n\n")[0].splitlines()
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    return lines[0].split(), {c[0]: c[1:] for c in cells}


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """A real sweep: two imagefolder datasets x a pretrained and a from-scratch backbone."""
    root = tmp_path_factory.mktemp("two_folders")
    pets = make_image_folder(root / "pets", classes=("cats", "dogs"))
    flowers = make_image_folder(root / "flowers", classes=("roses", "tulips"), seed=1)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "tl.train", "-m", "model=resnet18_scratch,efficientnet_lite0", "strategy=freeze",
         "dataset=imagefolder", f"dataset.root={pets},{flowers}", "model.input_size=32", "trainer.epochs=1",
         "trainer.batch_size=4", "trainer.num_workers=0", f"tracking.uri={uri}",
         f"hydra.sweep.dir={root / 'multirun'}"],
        cwd=root, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("tl").experiment_id])
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    # a run that logs the dataset's identity is labelled by it; one logged before, by name and folder
    label = {os.path.basename(r.data.params["dataset.root"]):
             r.data.tags.get("tl.data_id", f"imagefolder ({os.path.basename(r.data.params['dataset.root'])})")
             for r in jobs}
    return SimpleNamespace(uri=uri, text=compare(uri, "--out", str(root / "out")), label=label, jobs=jobs,
                           out=root / "out")


def test_two_imagefolder_datasets_in_one_sweep_give_two_matrices(two_folders):
    for folder in ("pets", "flowers"):
        strategies, cells = matrix_block(two_folders.text, two_folders.label[folder])
        assert strategies == ["freeze"]
        assert set(cells) == {"tf_efficientnet_lite0", "resnet18 (scratch)"}
    assert two_folders.text.count("backbone x strategy (") == 2


def test_each_dataset_has_its_own_best_and_verdict(two_folders):
    text = two_folders.text
    for folder in ("pets", "flowers"):
        label = two_folders.label[folder]
        _, cells = matrix_block(text, label)
        assert sum(v.endswith("*") for row in cells.values() for v in row) == 1  # one best per dataset
        assert f"Verdict ({label}):\n  Best on {label}: " in text
    runs_table = text.split("\n\n")[1].splitlines()
    starred = [line for line in runs_table if line.startswith("*  ")]
    for folder in ("pets", "flowers"):  # the best run of each dataset, not one best of both
        assert sum(two_folders.label[folder] in line for line in starred) == 1


def test_a_backbone_trained_from_scratch_is_labelled_apart(two_folders):
    runs_table = two_folders.text.split("\n\n")[1].splitlines()
    scratch = [line for line in runs_table if "resnet18" in line]
    assert len(scratch) == 2 and all("resnet18 (scratch)" in line for line in scratch)
    assert not any("tf_efficientnet_lite0 (scratch)" in line for line in runs_table)


def test_the_dataset_identity_tag_keys_the_matrix_not_the_dataset_name(store):
    log_sweep(store, [Job("lite0", "freeze", 0.9, data_id="pets-1111aaaa", root="/a/pets"),
                      Job("lite0", "freeze", 0.6, data_id="pets-2222bbbb", root="/b/pets"),
                      Job("lite0", "finetune", 0.8, data_id="pets-1111aaaa", root="/c/pets_copy")])
    text = compare(store)
    strategies, cells = matrix_block(text, "pets-1111aaaa")  # same content from another folder: one dataset
    assert strategies == ["finetune", "freeze"] and cells["lite0"] == ["0.8000", "0.9000*"]
    assert matrix_block(text, "pets-2222bbbb")[1]["lite0"] == ["0.6000*"]


def test_runs_logged_before_the_identity_tag_are_keyed_by_dataset_and_root(store):
    log_sweep(store, [Job("lite0", "freeze", 0.9, root="/data/one/pets"),
                      Job("lite0", "freeze", 0.6, root="/data/two/pets"),
                      Job("lite0", "freeze", 0.7, root="/data/flowers")])
    text = compare(store)
    assert matrix_block(text, "imagefolder (/data/one/pets)")[1]["lite0"] == ["0.9000*"]
    assert matrix_block(text, "imagefolder (/data/two/pets)")[1]["lite0"] == ["0.6000*"]
    assert matrix_block(text, "imagefolder (flowers)")[1]["lite0"] == ["0.7000*"]


def test_pretrained_and_scratch_of_one_backbone_are_two_rows_never_pooled(store):
    log_sweep(store, [Job("resnet18", "finetune", 0.95, pretrained="true"),
                      Job("resnet18", "finetune", 0.55, pretrained="false", extra={"model.pretrained": "false"}),
                      # logged before the tl.pretrained tag: the model.pretrained param decides
                      Job("mobilenet_v3_small", "finetune", 0.5, pretrained=None, pretrained_param="False")])
    _, cells = matrix_block(compare(store), "imagefolder")
    assert cells == {"resnet18": ["0.9500*"], "resnet18 (scratch)": ["0.5500"],
                     "mobilenet_v3_small (scratch)": ["0.5000"]}


def test_runs_that_differ_only_in_seed_form_one_group(store):
    jobs = [Job("lite0", "freeze", 0.90 + 0.01 * s, seed=s, extra={"optimizer.lr": "0.01"}) for s in (0, 1, 2)]
    jobs += [Job("lite0", "freeze", 0.80, seed=s, extra={"optimizer.lr": "0.1"}) for s in (0, 1, 2)]
    log_sweep(store, jobs)
    text = compare(store)
    block = text.split("Seed groups on imagefolder:")[1].split("\n\n")[0].splitlines()
    assert "n" in block[1].split() and "seeds" in block[1].split()
    best, other = block[2].split(), block[3].split()
    assert best[:6] == ["*", "lite0", "freeze", "optimizer.lr=0.01", "3", "0.9100"]
    assert best[-1] == "0,1,2"
    assert other[:5] == ["lite0", "freeze", "optimizer.lr=0.1", "3", "0.8000"]


def test_groups_of_old_rows_without_seeds_are_one_run_each():
    from tl.tracking.runs import Row

    rows = [Row(str(i), "", "FINISHED", "vgg16", s, "digits", acc, 1, 0.5, 1.0, 1, 2)
            for i, (s, acc) in enumerate([("freeze", 0.9), ("finetune", 0.8)])]
    (ds,) = groups.analyse(rows).values()
    assert [(g.strategy, g.acc.n, g.acc.half_width) for g in ds.groups] == [("freeze", 1, None), ("finetune", 1, None)]
    assert render.matrices({"digits": ds})["digits"].what == "Best val acc"


def test_a_nan_metric_and_a_missing_seed_are_listed_never_a_crash(store):
    log_sweep(store, [Job("lite0", "freeze", 0.9, seed=0), Job("lite0", "freeze", 0.92, seed=None),
                      Job("lite0", "finetune", float("nan"), seed=0), Job("lite0", "finetune", 0.5, seed=1)])
    text = compare(store)
    runs_table = text.split("\n\n")[1].splitlines()
    assert any(line.startswith("NaN ") and " nan " in line for line in runs_table)
    assert "Not counted (failed, or no usable best val acc): lite0 + finetune seed 0 (best_val_acc is nan)." in text
    assert "Best on imagefolder: lite0 + freeze, best val acc 0.910 ± " in text
