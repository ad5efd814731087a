"""`tl answer`'s command line: what it composes, and wrong input refused with the fix, before
any work starts."""

import subprocess
import sys
from pathlib import Path

import pytest

from tl.cli import answer
from tl.cli.main import main as tl_command

ROOT = Path(__file__).resolve().parents[2]


def test_tl_answer_composes_one_answer_sweep_with_models_and_strategies_as_the_sweepers(tmp_path):
    argv = answer.command(str(tmp_path), "20m", ["models=[efficientnet_lite0,resnet18]", "strategies=freeze,finetune",
                                                 "model.input_size=160"], "abc123", None)
    assert argv[1:4] == ["-m", "tl.train", "-m"]
    assert "hydra/sweeper=answer" in argv and f"dataset.root={tmp_path.resolve()}" in argv
    assert "hydra.sweeper.models=[efficientnet_lite0,resnet18]" in argv
    assert "hydra.sweeper.strategies=[freeze,finetune]" in argv
    assert "hydra.sweeper.budget=20m" in argv and "hydra.sweeper.resume=abc123" in argv
    assert "model.input_size=160" in argv


def test_a_budget_that_is_no_duration_is_refused_before_anything_runs(tmp_path, capsys):
    assert tl_command(["answer", str(tmp_path), "--budget", "soon"]) == 2
    assert "20m" in capsys.readouterr().err


def test_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    assert tl_command(["answer", str(tmp_path / "nowhere"), "--budget", "20m"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_an_unknown_option_is_refused_though_overrides_may_follow_the_options(tmp_path):
    with pytest.raises(SystemExit):
        tl_command(["answer", str(tmp_path), "--budget", "20m", "--no-such-option"])


def test_the_sweeper_refuses_an_override_it_sets_per_trial_and_names_its_own_key(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tl.train", "-m", "hydra/sweeper=answer", "model=resnet18_scratch",
                          f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={tmp_path / 'm'}"],
                         cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "hydra.sweeper.models" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_sigterm_to_tl_answer_stops_its_sweep_and_leaves_no_process(tmp_path):
    import os
    import signal

    import psutil

    from tests.conftest import make_image_folder

    make_image_folder(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "tl", "answer", str(tmp_path / "data"), "--budget", "10m",
                             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "models=[resnet18_scratch]",
                             "model.input_size=32", "trainer.batch_size=4", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # the sweep is under way once its screen starts
        seen.append(line)
        if line.startswith("[screen]"):
            break
    (sweep,) = psutil.Process(proc.pid).children()
    proc.send_signal(signal.SIGTERM)
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert not sweep.is_running() or sweep.status() == psutil.STATUS_ZOMBIE, "the sweep stopped with tl answer"
