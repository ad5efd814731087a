"""No secret in a run's record: a password in the tracking URI's login and a value read through
`${oc.env:...}` are planted, a real run and a real sweep log through a real `mlflow server`, and
everything they wrote (the server's database and artifacts, Hydra's output folders, the feature
cache, stdout and stderr) is searched for the secrets."""

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import make_image_folder
from tests.helpers.rest import api, params, tags
from tests.helpers.servers import plain_mlflow_server

pytestmark = pytest.mark.slow  # end to end: a run and a sweep in subprocesses

PASSWORD = "pw-Zq81xLogin"          # in tracking.uri's login
TOKEN = "tok-Hh52vFromTheEnv"       # in the environment, read by an interpolation
SECRETS = (PASSWORD, TOKEN)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with plain_mlflow_server(tmp_path_factory.mktemp("secrets_server")) as s:
        yield s


def login_uri(server) -> str:
    host = urllib.parse.urlsplit(server.url).netloc
    return f"http://alice:{PASSWORD}@{host}"


def tl_train(server, work: Path, *args: str) -> subprocess.CompletedProcess:
    data = make_image_folder(work / "data")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TL_TEST_TOKEN": TOKEN, "XDG_CACHE_HOME": str(work / "cache")}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    out = subprocess.run(
        [sys.executable, "-m", "tl.train", *args, "dataset=imagefolder", f"dataset.root={data}", "model=resnet18",
         "model.pretrained=false", "model.input_size=32", "trainer.epochs=1", "trainer.batch_size=4",
         "trainer.num_workers=0", f"tracking.uri={login_uri(server)}", "+team.token=${oc.env:TL_TEST_TOKEN}",
         f"tracking.experiment={work.name}"],
        cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def runs_of(server, experiment: str) -> list[dict]:
    exp = api(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment)["experiment"]
    return api(server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]


def holders(roots: list[Path], texts: dict[str, str]) -> list[str]:
    """Every file under `roots`, and every named text, that holds one of the secrets."""
    found = []
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file():
                raw = f.read_bytes()
                found += [f"{f} holds {s}" for s in SECRETS if s.encode() in raw]
    for name, text in texts.items():
        found += [f"{name} holds {s}" for s in SECRETS if s in text]
    return found


@pytest.fixture(scope="module")
def single(server):
    work = server.root / "single"
    work.mkdir()
    out = tl_train(server, work, f"hydra.run.dir={work / 'out'}")
    return SimpleNamespace(work=work, out=out, runs=runs_of(server, "single"))


@pytest.fixture(scope="module")
def swept(server):
    work = server.root / "sweep"
    work.mkdir()
    out = tl_train(server, work, "-m", "trainer.seed=0", f"hydra.sweep.dir={work / 'multirun'}")
    return SimpleNamespace(work=work, out=out, runs=runs_of(server, "sweep"))


def test_a_run_logs_through_a_login_in_the_uri_and_records_it_masked(server, single):
    (run,) = single.runs
    assert run["info"]["status"] == "FINISHED"
    host = urllib.parse.urlsplit(server.url).netloc
    assert params(run)["tracking.uri"] == f"http://alice:***@{host}"
    assert f"tracking.uri=http://alice:***@{host}" in tags(run)["tl.overrides"]
    assert f"tracking.uri=http://alice:***@{host}" in tags(run)["tl.command"]


def test_an_env_interpolation_is_recorded_as_its_text(single):
    (run,) = single.runs
    assert params(run)["team.token"] == "${oc.env:TL_TEST_TOKEN}"
    assert "+team.token=${oc.env:TL_TEST_TOKEN}" in tags(run)["tl.overrides"]


def test_the_printed_links_open_the_server_without_the_login(server, single):
    assert f"runs:   {server.url}/#/experiments/" in single.out.stdout
    assert "alice" not in single.out.stdout  # no login at all: the browser asks for it


def test_nothing_a_run_writes_or_prints_holds_a_secret(server, single):
    # The server's database and artifacts, the Hydra output folder with its .hydra/, the cache.
    assert holders([server.root, single.work], {"stdout": single.out.stdout, "stderr": single.out.stderr}) == []


def test_nothing_a_sweep_writes_or_prints_holds_a_secret(server, swept):
    roles = sorted(tags(r).get("tl.role", "job") for r in swept.runs)
    assert roles == ["job", "sweep"] and all(r["info"]["status"] == "FINISHED" for r in swept.runs)
    assert (swept.work / "multirun" / "multirun.yaml").is_file()
    # The launcher's log of each job's overrides, multirun.yaml, the parent's tags, each job's .hydra/.
    assert holders([server.root, swept.work], {"stdout": swept.out.stdout, "stderr": swept.out.stderr}) == []
    # Hydra's launcher logged the job's overrides, as its sweeper escapes them, login masked.
    assert "tracking.uri=http\\://alice\\:***@127.0.0.1" in swept.out.stdout + swept.out.stderr
