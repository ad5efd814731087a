"""Kill and resume: a signal ends a run KILLED with a checkpoint of its last complete epoch, and
`+resume=RUN_ID` finishes the same run with the metrics an uninterrupted run has."""

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tests.helpers.callbacks import sigterm_after
from tests.helpers.runs import BATCHES_PER_EPOCH, CURVES, make_run, runs
from tl.errors import ConfigError
from tl.runtime import seeding, signals
from tl.tracking.readback import history
from tl.train import train
from tl.training import checkpoints, resume

# Dropout (mobilenet's head), frozen stages with BatchNorm in eval mode, momentum, and a learning
# rate that changes every epoch: each is state a resume must carry over exactly.
RECIPE = ["model=mobilenet_v3_small_scratch", "strategy=partial_freeze", "scheduler=step",
          "scheduler.decay_epochs=1", "trainer.epochs=3"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """An uninterrupted run and the same run stopped by SIGTERM in epoch 2, as left in the store."""
    from tests.conftest import make_image_folder

    tmp = tmp_path_factory.mktemp("resume")
    store = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    overrides = ["dataset=imagefolder", f"dataset.root={make_image_folder(tmp / 'data')}",
                 "model.input_size=32", "trainer.batch_size=4", "trainer.num_workers=0",
                 f"tracking.uri={store}", *RECIPE]
    train(compose_cfg(*overrides))
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_after(BATCHES_PER_EPOCH + 2), pytest.raises(signals.Interrupted) as stop:
        train(compose_cfg(*overrides))
    client, (reference, run) = runs(store)
    folder = checkpoints.local_dir(run.info.artifact_uri) / "checkpoints"
    return {"store": store, "reference": reference, "run": run, "error": stop.value,
            "handler_after": signal.getsignal(signal.SIGTERM), "handler_before": before,
            "last": checkpoints.read(folder / "last.pt"), "files": sorted(os.listdir(folder))}


def test_sigterm_mid_epoch_ends_the_run_killed_with_its_error(killed):
    run = killed["run"]
    assert run.info.status == "KILLED"
    assert run.data.tags["tl.error_type"] == "SIGTERM"
    assert f"resume with: tl-train +resume={run.info.run_id}" in run.data.tags["tl.error"]
    assert killed["error"].signum == signal.SIGTERM
    assert killed["handler_after"] == killed["handler_before"]


def test_the_killed_run_keeps_a_checkpoint_of_its_last_complete_epoch(killed):
    client = MlflowClient(killed["store"])
    assert [s for s, _ in history(client, killed["run"].info.run_id, "val_acc")] == [1]
    last = killed["last"]
    assert last["epoch"] == 1 and last["best_epoch"] == 1
    assert {"model", "optimizer", "scheduler", "scaler", "best_val_acc", "rng"} <= set(last)
    assert set(last["rng"]) == {"torch", "cuda", "numpy", "python", "loader"}
    assert last["optimizer"]["state"], "momentum buffers"
    assert killed["files"] == ["best.pt", "last.pt"]  # no temp file left behind


def test_resume_finishes_the_same_run_with_the_metrics_of_an_uninterrupted_one(killed):
    run_id = killed["run"].info.run_id
    best = train(compose_cfg(f"+resume={run_id}", f"tracking.uri={killed['store']}")).best_val_acc
    client, found = runs(killed["store"])
    assert len(found) == 2
    resumed, reference = client.get_run(run_id), killed["reference"]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["tl.resumes"] == "1"
    assert "tl.error" not in resumed.data.tags
    for key in CURVES:
        assert history(client, run_id, key) == history(client, reference.info.run_id, key), key
    lr = float(resumed.data.params["optimizer.lr"])
    assert [v for _, v in history(client, run_id, "lr")] == pytest.approx([lr, lr / 10, lr / 100])
    assert best == reference.data.metrics["best_val_acc"] == resumed.data.metrics["best_val_acc"]
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.pt"]


def test_resume_of_an_unknown_run_says_where_it_looked(shared_store):
    with pytest.raises(ConfigError, match=r"resume=abc: no such run in sqlite:.* pass tracking.uri"):
        train(compose_cfg("+resume=abc", f"tracking.uri={shared_store}"))


def test_resume_of_a_finished_run_is_refused(shared_store):
    _, run_id = make_run(shared_store, "FINISHED")
    with pytest.raises(ConfigError, match="already FINISHED; there is nothing to resume"):
        train(compose_cfg(f"+resume={run_id}", f"tracking.uri={shared_store}"))


def test_resume_of_a_run_whose_process_still_runs_is_refused(shared_store):
    alive = {"tl.host": socket.gethostname(), "tl.pid": str(os.getppid())}
    _, run_id = make_run(shared_store, "RUNNING", alive)
    with pytest.raises(ConfigError, match=f"the run is RUNNING \\(process {os.getppid()} on"):
        train(compose_cfg(f"+resume={run_id}", f"tracking.uri={shared_store}"))


def test_resume_refuses_overrides_that_would_change_the_run(shared_store):
    _, run_id = make_run(shared_store, "KILLED")
    cfg = compose_cfg(f"+resume={run_id}", f"tracking.uri={shared_store}", "optimizer.lr=0.1")
    with pytest.raises(ConfigError, match=r"would change it: optimizer.lr=0.1\. Drop them"):
        resume.reopen(cfg, [f"+resume={run_id}", f"tracking.uri={shared_store}", "optimizer.lr=0.1",
                            "trainer.num_workers=2"])


def test_a_checkpoint_of_another_architecture_is_refused_with_the_keys_named(fast_overrides, shared_store):
    cfg = compose_cfg(*fast_overrides)
    client, run_id = make_run(shared_store, "KILLED", config=cfg)
    other = torch.nn.Sequential(torch.nn.Linear(3, 2)).state_dict()
    checkpoints.atomic_save({"format": checkpoints.FORMAT, "model": other},
                              checkpoints.local_dir(client.get_run(run_id).info.artifact_uri)
                              / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError, match=r"does not fit the model \(\d+ mismatched keys\): unexpected 0.weight"):
        train(compose_cfg(f"+resume={run_id}", f"tracking.uri={shared_store}"))
    assert client.get_run(run_id).info.status == "FAILED"


class Payload:
    def __reduce__(self):
        return (print, ("this ran on load",))


def test_checkpoints_load_weights_only(tmp_path):
    torch.save({"format": checkpoints.FORMAT, "model": Payload()}, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="cannot be loaded: Weights only load failed"):
        checkpoints.read(tmp_path / "last.pt")


def test_a_failed_checkpoint_write_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "last.pt"
    checkpoints.atomic_save({"epoch": 1}, path)
    with pytest.raises(Exception):
        checkpoints.atomic_save({"epoch": 2, "bad": lambda: None}, path)  # cannot be pickled
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_signal_inside_a_deferred_section_stops_the_run_when_the_section_ends():
    done = []
    with pytest.raises(signals.Interrupted), signals.stop_on_signals():
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("the section finished")
        done.append("never")
    assert done == ["the section finished"]


def test_signal_handlers_are_restored_afterwards():
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    with signals.stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in signals.SIGNALS} == before


def test_a_second_signal_ends_the_process_at_once():
    code = ("import os, signal, time; from tl.runtime import signals\n"
            "with signals.stop_on_signals(), signals.deferred():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    print('first deferred', flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(5)\n"
            "print('never')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGTERM
    assert out.stdout == "first deferred\n"


def test_epoch_order_does_not_depend_on_the_epochs_before_it():
    fresh, walked = seeding.EpochSampler(10, seed=7), seeding.EpochSampler(10, seed=7)
    for epoch in (1, 2):
        walked.set_epoch(epoch)
        list(walked)
    walked.set_epoch(3)
    fresh.set_epoch(3)
    assert list(fresh) == list(walked)
    fresh.set_epoch(4)
    assert sorted(i for i, _ in fresh) == list(range(10)) and list(fresh) != list(walked)


class RandomSample(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.rand(3)  # as an augmentation draws


def test_augmentation_depends_on_the_sample_seed_only_not_on_workers_or_global_rng():
    def batches(num_workers):
        sampler = seeding.EpochSampler(12, seed=3)
        sampler.set_epoch(2)
        loader = torch.utils.data.DataLoader(seeding.SeededSamples(RandomSample()), batch_size=4,
                                             sampler=sampler, num_workers=num_workers,
                                             generator=torch.Generator())  # as tl's loaders
        return [b for b in loader]

    torch.manual_seed(0)
    state = torch.get_rng_state()
    in_process = batches(0)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG (dropout's) is untouched"
    torch.manual_seed(99)
    assert all(torch.equal(a, b) for a, b in zip(in_process, batches(2)))


@pytest.mark.parametrize("recipe", [
    ["model=resnet18", "model.pretrained=false", "strategy=freeze"],  # trains on cached features
    ["model=resnet18", "model.pretrained=false", "strategy=finetune", "trainer.device_augment=true"],
], ids=["cached-features", "device-batches"])
def test_resume_is_exact_on_every_kind_of_batches(tmp_path, recipe):
    from tests.conftest import make_image_folder

    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    overrides = ["dataset=imagefolder", f"dataset.root={make_image_folder(tmp_path / 'data')}",
                 "model.input_size=32", "trainer.batch_size=4", "trainer.num_workers=0",
                 "trainer.epochs=3", "scheduler=step", "scheduler.decay_epochs=1",
                 f"tracking.uri={store}", *recipe]
    train(compose_cfg(*overrides))
    with sigterm_after(BATCHES_PER_EPOCH + 2), pytest.raises(signals.Interrupted):
        train(compose_cfg(*overrides))
    client, (reference, run) = runs(store)
    train(compose_cfg(f"+resume={run.info.run_id}", f"tracking.uri={store}"))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    for key in CURVES:
        assert history(client, run.info.run_id, key) == history(client, reference.info.run_id, key), key
