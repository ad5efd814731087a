"""The links a run, a sweep and `tl compare` print open what they name, in a real browser: a
real `mlflow server` on 127.0.0.1 holding a small logged sweep, opened in headless Chromium
(the system's package, driven by playwright without a downloaded browser)."""

import os
import re
import shutil

import pytest

from tests.helpers.logged_sweeps import Job, log_sweep
from tests.helpers.servers import plain_mlflow_server
from tl.tracking import store

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PAGE_MS = 90_000  # the UI's first load compiles a large bundle: slow on 2 busy cores


def chromium() -> str | None:
    if os.environ.get("TL_CHROMIUM"):
        return os.environ["TL_CHROMIUM"]
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


pytestmark = pytest.mark.skipif(
    chromium() is None, reason="no Chromium executable (apt-get install chromium, or set TL_CHROMIUM=PATH); "
                               ".ci/run installs it")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A tracking server with one logged sweep of three runs, and the links tl prints for it."""
    with plain_mlflow_server(tmp_path_factory.mktemp("links")) as server:
        url, root = server.url, server.root
        client, parent, ids = log_sweep(url, [Job("lite0", "finetune", 0.95), Job("lite0", "freeze", 0.9),
                                              Job("resnet18", "finetune", 0.7)], name="sweep links")
        exp_id = client.get_run(parent).info.experiment_id
        hint = store.ui_hint(url, exp_id, ids)
        links = dict(re.findall(r"^\s+(runs|curves):\s+(\S+)$", hint, flags=re.M))
        names = [client.get_run(i).info.run_name for i in ids]
        yield dict(url=url, links=links, names=names, root=root)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def open_page(browser, link, wait_for, shot):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(link)
    page.get_by_text(wait_for, exact=True).first.wait_for(timeout=PAGE_MS)
    page.wait_for_timeout(1000)  # let the chart finish drawing before the screenshot
    page.screenshot(path=str(shot))
    return page


def test_the_printed_links_are_the_runs_table_and_the_curves(ui):
    assert set(ui["links"]) == {"runs", "curves"}
    assert ui["links"]["curves"].startswith(ui["url"] + "/#/metric?")


def test_the_curves_link_opens_val_accuracy_and_loss_per_epoch_of_every_run(ui, browser):
    page = open_page(browser, ui["links"]["curves"], "val_acc vs val_loss", ui["root"] / "curves.png")
    text = page.inner_text("body")
    assert "Step" in text  # the x axis is the epoch
    for name in ui["names"]:  # every run, both metrics, in the chart's legend
        assert f"{name} (val_acc)" in text and f"{name} (val_loss)" in text
    assert "Parallel Coordinates" not in text and "invalid URL" not in text
    page.close()


def test_the_runs_link_opens_the_model_training_runs_table(ui, browser):
    page = open_page(browser, ui["links"]["runs"], "sweep links", ui["root"] / "runs.png")
    text = page.inner_text("body")
    assert "Run Name" in text and "4 matching runs" in text  # the parent and its three children
    assert "Observability" not in text  # GenAI mode's sidebar (Overview, Observability, Traces, ...)
    page.close()
