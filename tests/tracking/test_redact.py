"""What tl records and prints never shows a password: URI logins and password-like query values
are masked, environment interpolations are recorded as written, log records are redacted when
made, Hydra's saved files are redacted in place, and errors and links leave the login out."""

import logging
import os
import urllib.parse

import pytest
from omegaconf import OmegaConf

from tests.helpers.servers import free_port
from tl.errors import ConfigError
from tl.tracking import links, redact, remote, store


@pytest.mark.parametrize("given, recorded", [
    ("http://alice:pw@host:5000", "http://alice:***@host:5000"),
    ("tracking.uri=https://alice:pw@host/mlflow", "tracking.uri=https://alice:***@host/mlflow"),
    ("postgresql+psycopg://mlflow:s3%40cret@127.0.0.1:5432/mlflow",
     "postgresql+psycopg://mlflow:***@127.0.0.1:5432/mlflow"),
])
def test_a_uri_password_is_masked_and_the_user_kept(given, recorded):
    assert redact.text(given) == recorded


def test_a_password_holding_a_raw_at_sign_is_masked_whole():
    assert redact.text("http://alice:p@ss@host/x") == "http://alice:***@host/x"


def test_a_login_as_a_sweeper_escapes_it_is_masked():
    assert redact.text(r"tracking.uri=http\://alice\:pw@host\:5000") == r"tracking.uri=http\://alice\:***@host\:5000"


def test_password_like_query_values_are_masked_and_other_values_kept():
    url = "https://store.example.org/a.zip?sas_token=abc&design=1&X-Amz-Signature=zz&password=p"
    assert redact.text(url) == "https://store.example.org/a.zip?sas_token=***&design=1&X-Amz-Signature=***&password=***"


@pytest.mark.parametrize("plain", [
    "postgresql://mlflow@127.0.0.1:5432/mlflow", "http://127.0.0.1:5000/#/experiments/1",
    "see http://host:5000 or mail me@example.org", "sqlite:////tmp/mlruns/mlflow.db",
])
def test_text_without_a_secret_is_unchanged(plain):
    assert redact.text(plain) == plain


def test_an_env_interpolation_is_recorded_as_its_text_never_its_value(monkeypatch):
    monkeypatch.setenv("TL_TEST_SECRET", "s3cret-value")
    cfg = OmegaConf.create({"token": "${oc.env:TL_TEST_SECRET}",
                            "copy": "${token}", "inside": "x-${copy}", "epochs": 2, "name": "${epochs}",
                            "list": ["${oc.env:TL_TEST_SECRET,none}", 1]})
    assert redact.recorded_config(cfg) == {
        "token": "${oc.env:TL_TEST_SECRET}", "copy": "${token}",
        "inside": "x-${copy}", "epochs": 2, "name": 2, "list": ["${oc.env:TL_TEST_SECRET,none}", 1]}
    assert "s3cret-value" not in redact.config_yaml(cfg)
    assert cfg.token == "s3cret-value"  # what trains still reads the value


def test_the_params_of_a_config_hold_neither_a_login_nor_an_env_value(monkeypatch):
    monkeypatch.setenv("TL_TEST_SECRET", "s3cret-value")
    cfg = OmegaConf.create({"tracking": {"uri": "http://alice:pw@host"}, "team": {"token": "${oc.env:TL_TEST_SECRET}"}})
    assert store.flatten(cfg) == {"tracking.uri": "http://alice:***@host", "team.token": "${oc.env:TL_TEST_SECRET}"}


def test_links_open_the_server_without_the_login():
    assert links.runs_url("http://alice:pw@host:5000", "3").startswith("http://host:5000/#/experiments/3/")
    assert links.curves_url("http://alice:pw@host:5000", ["3"], ["r"]).startswith("http://host:5000/#/metric?")
    hint = store.ui_hint("postgresql://mlflow:pw@db/mlflow", "3", ["r"])
    assert "pw" not in hint and "postgresql://mlflow:***@db/mlflow" in hint


def test_a_tl_error_never_shows_a_password():
    error = ConfigError("tracking.uri=http://alice:pw@host is wrong")
    assert str(error) == "tracking.uri=http://alice:***@host is wrong"


def test_an_unreachable_servers_error_shows_the_user_not_the_password(monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    uri = f"http://alice:pw-7Yq@127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(remote.ServerError) as e:
        remote.check_server(uri)
    assert "pw-7Yq" not in str(e.value) and "http://alice:***@127.0.0.1" in str(e.value)
    refused = str(remote.refused_login(uri, 401))
    assert "pw-7Yq" not in refused and "for user 'alice'" in refused


@pytest.fixture
def record_factory():
    before = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(before)


def test_log_records_are_redacted_when_made_whatever_handles_them(record_factory, caplog):
    redact.redact_logs()
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra.launcher").info("\t#%d : %s", 0, "tracking.uri=http://alice:pw@host")
    assert caplog.records[-1].getMessage() == "\t#0 : tracking.uri=http://alice:***@host"


def test_a_file_is_redacted_in_place_keeping_its_mode(tmp_path):
    f = tmp_path / "overrides.yaml"
    f.write_text("- tracking.uri=http://alice:pw@host\n- trainer.epochs=2\n")
    os.chmod(f, 0o640)
    redact.scrub_file(f)
    assert f.read_text() == "- tracking.uri=http://alice:***@host\n- trainer.epochs=2\n"
    assert f.stat().st_mode & 0o777 == 0o640 and [p.name for p in tmp_path.iterdir()] == ["overrides.yaml"]


def test_mlflow_is_kept_from_printing_a_uri_with_a_login(record_factory, monkeypatch):
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    redact.protect("http://127.0.0.1:5000")
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ  # its "View run" lines are harmless
    redact.protect("http://alice:pw@127.0.0.1:5000")
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"


def test_without_login_keeps_everything_but_the_login():
    url = redact.without_login("https://alice:pw@host:8443/mlflow?x=1")
    assert urllib.parse.urlsplit(url)._replace() == urllib.parse.urlsplit("https://host:8443/mlflow?x=1")


def test_a_node_copied_by_interpolation_is_recorded_redacted():
    cfg = OmegaConf.create({"a": {"uri": "http://alice:pw@host"}, "b": "${a}"})
    assert redact.recorded_config(cfg)["b"] == {"uri": "http://alice:***@host"}
