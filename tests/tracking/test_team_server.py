"""Against a real team server on loopback (tests/helpers/servers.py): PostgreSQL, `tl server` with
served artifacts and basic-auth logins (default permission NO_PERMISSIONS). A run logs through
it; a missing, wrong or under-privileged login and an unreachable server are one clear error
before any training, leaving no run; a killed run resumes through the server's artifact store."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from tests.conftest import make_image_folder
from tests.helpers.rest import api, fetch, history, listing
from tests.helpers.runs import CURVES
from tests.helpers.servers import free_port, stop_group, team_server, wait_until_healthy  # noqa: F401
from tl.tracking import server as ts
from tl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
ALICE = ("alice", "alice-pass-5678")  # creates the experiment: she may write to it
BOB = ("bob", "bob-pass-5678")        # granted READ on it: he may look, not log
CAROL = ("carol", "carol-pass-5678")  # granted nothing: with NO_PERMISSIONS she sees nothing
EXPERIMENT = "team"


def all_runs(server) -> list[dict]:
    """Every run on the server, of every experiment, as the admin sees them."""
    exps = api(server, "/api/2.0/mlflow/experiments/search", {"max_results": 1000}).get("experiments", [])
    if not exps:
        return []
    return api(server, "/api/2.0/mlflow/runs/search",
               {"experiment_ids": [e["experiment_id"] for e in exps], "max_results": 1000}).get("runs", [])


def tl_train(server_url: str, *overrides: str, login=None, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO)}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN"):
        env.pop(key, None)
    if login is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = login
    cwd.mkdir(parents=True, exist_ok=True)
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's own, e.g. -m, before the overrides
    rest = [o for o in overrides if not o.startswith("-")]
    return subprocess.run([sys.executable, "-m", "tl.train", *flags, f"tracking.uri={server_url}", *rest],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_overrides(data: Path, epochs: int = 2) -> list[str]:
    return ["dataset=imagefolder", f"dataset.root={data}", "model=resnet18", "model.pretrained=false",
            "model.input_size=32", f"trainer.epochs={epochs}", "trainer.batch_size=4", "trainer.num_workers=0",
            f"tracking.experiment={EXPERIMENT}"]


@contextlib.contextmanager
def admin_client(server):
    """MLflow's basic-auth client, logged in as the admin (it reads MLflow's env vars)."""
    from mlflow.server import get_app_client

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = server.admin
    try:
        yield get_app_client("basic-auth", server.url)  # as the README shows
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def team(team_server):
    """The server with three users: alice logs the first run (so the experiment is hers); bob
    is granted READ on that experiment, carol nothing."""
    with admin_client(team_server) as admin:
        for user, password in (ALICE, BOB, CAROL):
            admin.create_user(user, password)
    work = team_server.root / "work"
    data = make_image_folder(work / "data")
    out = tl_train(team_server.url, *run_overrides(data), login=ALICE, cwd=work / "first")
    assert out.returncode == 0, out.stderr[-3000:]
    exp = api(team_server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    (run,) = api(team_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    with admin_client(team_server) as admin:
        admin.grant_user_permission(BOB[0], "experiment", exp["experiment_id"], "READ")
    return SimpleNamespace(server=team_server, url=team_server.url, data=data, work=work,
                           experiment_id=exp["experiment_id"], run=run)


def test_a_run_logs_params_and_every_epochs_metrics_through_the_server(team):
    run_id = team.run["info"]["run_id"]
    assert team.run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in team.run["data"]["params"]}
    assert params["trainer.epochs"] == "2" and params["model.name"] == "resnet18"
    assert params["tracking.uri"] == team.url
    for key in CURVES:
        assert sorted(s for s, _ in history(team.server, run_id, key)) == [1, 2], key


def test_the_runs_artifacts_live_on_the_server_and_read_back_over_rest(team):
    run_id = team.run["info"]["run_id"]
    assert team.run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    assert {"config.yaml", "checkpoints"} <= listing(team.server, run_id)
    # A finished run keeps its best model; its resume point is deleted, as in a local store.
    assert listing(team.server, run_id, "checkpoints") == {"checkpoints/best.pt"}
    served = fetch(team.server, "/get-artifact", run_id=run_id, path="config.yaml").decode()
    assert OmegaConf.create(served).trainer.epochs == 2
    # The server keeps them in its artifacts folder: the client needed no access to it.
    stored = [p for p in (team.server.root / "artifacts").rglob("config.yaml")
              if run_id in p.parts and p.parent.name == "artifacts"]
    assert [p.read_text() for p in stored] == [served]


def assert_refused_before_training(out, expected: str, runs_before: int, server) -> None:
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"tl-train: error: {expected}" in out.stderr
    assert "Traceback" not in out.stderr
    # The data root does not exist: had tl read the data, the error would be about it.
    assert "dataset.root" not in out.stderr
    assert len(all_runs(server)) == runs_before


def test_no_login_is_refused_with_how_to_give_one_and_no_run(team):
    before = len(all_runs(team.server))
    out = tl_train(team.url, *run_overrides(team.work / "missing"), cwd=team.work / "anon")
    assert_refused_before_training(out, f"the MLflow server at {team.url} requires a login (HTTP 401)",
                                   before, team.server)
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out.stderr


def test_a_wrong_password_is_refused_naming_the_user_and_no_run(team):
    before = len(all_runs(team.server))
    out = tl_train(team.url, *run_overrides(team.work / "missing"), login=(ALICE[0], "not-her-password"),
                   cwd=team.work / "wrong")
    assert_refused_before_training(
        out, f"the MLflow server at {team.url} refused the login for user 'alice' (HTTP 401)", before, team.server)


def test_a_user_without_write_permission_cannot_log_to_the_experiment(team):
    before = len(all_runs(team.server))
    out = tl_train(team.url, *run_overrides(team.work / "missing"), login=BOB, cwd=team.work / "bob")
    assert_refused_before_training(
        out, f"the MLflow server at {team.url} denied user 'bob' writing to experiment '{EXPERIMENT}'",
        before, team.server)
    assert "EDIT permission" in out.stderr


def test_a_user_who_may_not_see_the_experiment_is_refused_too(team):
    before = len(all_runs(team.server))
    out = tl_train(team.url, *run_overrides(team.work / "missing"), login=CAROL, cwd=team.work / "carol")
    assert_refused_before_training(
        out, f"the MLflow server at {team.url} denied user 'carol' access to experiment '{EXPERIMENT}'",
        before, team.server)


def test_a_sweep_without_write_permission_stops_before_its_parent_run(team):
    before = len(all_runs(team.server))
    out = tl_train(team.url, "-m", "strategy=freeze,finetune", *run_overrides(team.work / "missing"),
                   f"hydra.sweep.dir={team.work / 'bob-sweep'}", login=BOB, cwd=team.work / "bob-sweep-cwd")
    assert out.returncode != 0
    assert f"the MLflow server at {team.url} denied user 'bob' writing to experiment '{EXPERIMENT}'" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(all_runs(team.server)) == before


def test_resuming_a_run_the_user_may_not_see_is_refused(team):
    run_id = team.run["info"]["run_id"]
    out = tl_train(team.url, f"+resume={run_id}", login=CAROL, cwd=team.work / "carol-resume")
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"tl-train: error: the MLflow server at {team.url} denied user 'carol' reading run {run_id}" in out.stderr


def test_an_unreachable_server_is_one_clear_error_before_training(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = tl_train(url, *run_overrides(tmp_path / "missing"), login=ALICE, cwd=tmp_path / "work", timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"tl-train: error: cannot reach the MLflow server at {url} (connection refused" in out.stderr
    assert "Traceback" not in out.stderr and "dataset.root" not in out.stderr


def test_tl_compare_against_an_unreachable_server_is_one_clear_error(capsys):
    from tl.cli.main import main as tl_command

    url = f"http://127.0.0.1:{free_port()}"
    assert tl_command(["compare", "--tracking-uri", url]) == 2
    assert capsys.readouterr().err.startswith(f"tl compare: error: cannot reach the MLflow server at {url}")


def test_a_killed_run_resumes_through_the_server_with_every_epoch_logged(team):
    # 16 training images in batches of 4: batch 6 is in epoch 2, after epoch 1's checkpoint.
    kill = ["+hydra.callbacks.kill._target_=tests.helpers.callbacks.SigtermMidEpoch", "+hydra.callbacks.kill.job_num=0",
            "+hydra.callbacks.kill.batches=6"]
    out = tl_train(team.url, *run_overrides(team.data, epochs=3), *kill, login=ALICE, cwd=team.work / "killed")
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    (run,) = [r for r in all_runs(team.server) if r["info"]["status"] == "KILLED"]
    run_id = run["info"]["run_id"]
    assert "checkpoints/last.pt" in listing(team.server, run_id, "checkpoints")
    assert sorted(s for s, _ in history(team.server, run_id, "train_loss")) == [1]

    # Another folder, nothing of the first process's: the checkpoint can only come from the server.
    again = tl_train(team.url, f"+resume={run_id}", login=ALICE, cwd=team.work / "elsewhere")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming run {run_id} after epoch 1" in again.stdout + again.stderr
    info = api(team.server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]["info"]
    assert info["status"] == "FINISHED"
    for key in CURVES:
        # Once each: epoch 1 was not trained again.
        assert sorted(s for s, _ in history(team.server, run_id, key)) == [1, 2, 3], key
    assert listing(team.server, run_id, "checkpoints") == {"checkpoints/best.pt"}


def test_a_login_in_the_tracking_uri_logs_through_the_server_and_is_recorded_masked(team):
    host = urllib.parse.urlsplit(team.url).netloc
    out = tl_train(f"http://{ALICE[0]}:{ALICE[1]}@{host}", *run_overrides(team.data, epochs=1),
                   cwd=team.work / "url-login")  # no MLFLOW_TRACKING_* login: the URI's is used
    assert out.returncode == 0, out.stderr[-3000:]
    assert ALICE[1] not in out.stdout + out.stderr
    (run,) = [r for r in all_runs(team.server)
              if "alice:***@" in {t["key"]: t["value"] for t in r["data"]["tags"]}.get("tl.overrides", "")]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["tracking.uri"] == f"http://alice:***@{host}"
    recorded = json.dumps(run) + "".join(
        fetch(team.server, "/get-artifact", run_id=run["info"]["run_id"], path=p).decode()
        for p in ("config.yaml", "hydra/overrides.yaml", "hydra/hydra.yaml", "hydra/config.yaml"))
    assert ALICE[1] not in recorded and f"alice:***@{host}" in recorded


def test_sigterm_to_tl_server_stops_the_whole_server(team, tmp_path):
    """A second server (logins off) on the same database: SIGTERM to `tl server` alone (not
    its group) must take MLflow's CLI, uvicorn and its workers with it."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tl", "server", f"port={port}", "workers=2", "auth.enabled=false",
             f"backend_store_uri={team.server.postgres.dsn}/mlflow", f"artifacts_destination={tmp_path / 'a'}"],
            cwd=tmp_path, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc, log_path)
        assert "logins:    off" in log_path.read_text()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "processes of the server outlived `tl server`"
    finally:
        stop_group(proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# The config alone: no server started.

def test_the_server_config_binds_to_loopback_and_serves_artifacts(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x")
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "k")
    cfg = ts.load([])
    cmd = ts.command(cfg)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "--artifacts-destination" in cmd and "--default-artifact-root" not in cmd
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth" and "--allowed-hosts" not in cmd
    assert "default_permission = NO_PERMISSIONS" in ts.auth_ini(cfg)
    assert "password" not in ts.auth_ini(cfg).lower()


def test_a_server_for_other_machines_gets_allowed_hosts(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x")
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "k")
    cmd = ts.command(ts.load(["host=0.0.0.0", "port=5001"]))
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "localhost" in hosts and any(h.endswith(":5001") for h in hosts)
    cmd = ts.command(ts.load(["host=0.0.0.0", "allowed_hosts=mlflow.example.org"]))
    assert cmd[cmd.index("--allowed-hosts") + 1] == "mlflow.example.org"


def test_logins_without_an_admin_password_in_the_environment_are_refused(monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_AUTH_ADMIN_PASSWORD is not set"):
        ts.load([])


@pytest.mark.parametrize("override, message", [
    ("port=0", "port=0 must be a port number"),
    ("auth.default_permission=WRITE", "auth.default_permission='WRITE' must be one of NO_PERMISSIONS"),
    ("backend_store_uri=./mlruns", "must be a database URI"),
    ("colour=blue", "Keys: backend_store_uri"),
])
def test_bad_server_config_values_name_the_key(monkeypatch, override, message):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x")
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "k")
    with pytest.raises(ConfigError, match=message):
        ts.load([override])


# No secret on a command line, in a file others may read, or served without logins.

PG_PASSWORD = "pg-9Kx%40pass"  # percent-encoded, as a URI carries a password holding `@`


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_a_started_server_puts_no_database_password_on_any_command_line(team_server, tmp_path):
    """`tl server` with `${oc.env:...}` passwords in both database URIs (one with a `%`): every
    process of its tree (MLflow's CLI, uvicorn, its workers) has neither password on its argv,
    the auth app's ini is 0600 in a 0700 folder, and the server serves logins."""
    port = free_port()
    log_path = tmp_path / "server.log"
    dsn = team_server.postgres.dsn.replace("mlflow@", "mlflow:${oc.env:TL_TEST_PG_PASSWORD}@")
    env = {**os.environ, "TL_TEST_PG_PASSWORD": PG_PASSWORD, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_AUTH_ADMIN_USERNAME": team_server.admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": team_server.admin[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only-csrf-key"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tl", "server", f"port={port}", "workers=1", f"backend_store_uri={dsn}/mlflow",
             f"auth.database_uri={dsn}/mlflow_auth", f"artifacts_destination={tmp_path / 'a'}"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc, log_path)
        tree = _process_tree(proc.pid)
        assert len(tree) >= 3, "expected tl server, MLflow's CLI and uvicorn"
        argvs = {pid: _read(Path(f"/proc/{pid}/cmdline")) for pid in tree}
        assert [pid for pid, argv in argvs.items() if PG_PASSWORD.encode() in argv or b"pg-9Kx" in argv] == []
        assert b"${oc.env:TL_TEST_PG_PASSWORD}" in argvs[proc.pid]  # what was typed, not its value
        environs = [_read(Path(f"/proc/{pid}/environ")).split(b"\0") for pid in tree]
        (ini,) = {Path(v.split(b"=", 1)[1].decode()) for e in environs for v in e
                  if v.startswith(b"MLFLOW_AUTH_CONFIG_PATH=")}
        assert ini.stat().st_mode & 0o777 == 0o600 and ini.parent.stat().st_mode & 0o777 == 0o700
        # The auth app reads the users' URI back whole: logins work (a `%` used to stop it).
        server = SimpleNamespace(url=f"http://127.0.0.1:{port}", admin=team_server.admin)
        assert "experiments" in api(server, "/api/2.0/mlflow/experiments/search", {"max_results": 1})
        assert PG_PASSWORD not in log_path.read_text() and "pg-9Kx" not in log_path.read_text()
    finally:
        stop_group(proc)
    assert not ini.parent.exists()  # removed on exit


def test_the_runs_database_uri_goes_in_the_environment_never_on_argv(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x")
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "k")
    monkeypatch.setenv("TL_TEST_PG_PASSWORD", PG_PASSWORD)
    cfg = ts.load(["backend_store_uri=postgresql://mlflow:${oc.env:TL_TEST_PG_PASSWORD}@db:5432/mlflow"])
    assert not any(PG_PASSWORD in a or "postgresql" in a for a in ts.command(cfg))
    assert ts.environment(cfg) == {"MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow:{PG_PASSWORD}@db:5432/mlflow"}
    assert PG_PASSWORD not in ts.connect_hint(cfg)


def test_a_percent_in_the_users_database_password_reads_back_whole(monkeypatch, tmp_path):
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x")
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "k")
    uri = f"postgresql://mlflow:{PG_PASSWORD}@db:5432/mlflow_auth"
    cfg = ts.load([f"auth.database_uri={uri}"])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ts.write_private(tmp_path, "basic_auth.ini", ts.auth_ini(cfg))))
    assert read_auth_config().database_uri == uri


def test_the_auth_ini_is_created_readable_by_its_owner_only(tmp_path):
    ini = ts.write_private(tmp_path, "basic_auth.ini", "[mlflow]\n")
    assert ini.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):  # never written through a file (or link) already there
        ts.write_private(tmp_path, "basic_auth.ini", "[mlflow]\n")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "mlflow.lab.example.org"])
def test_a_server_without_logins_on_a_non_loopback_host_is_refused_saying_why(host):
    with pytest.raises(ConfigError, match="allow_insecure_open_server=true") as e:
        ts.load([f"host={host}", "auth.enabled=false"])
    assert "with no login" in str(e.value)


def test_an_open_server_is_served_when_the_insecure_flag_says_so():
    cmd = ts.command(ts.load(["host=0.0.0.0", "auth.enabled=false", "allow_insecure_open_server=true"]))
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and "--app-name" not in cmd


def test_a_server_without_logins_on_loopback_needs_no_flag():
    assert ts.load(["host=127.0.0.1", "auth.enabled=false"]).auth.enabled is False
