"""Links into MLflow's UI that open what they name, checked against MLflow 3.17's UI in a
real browser (tests/tracking/test_links_browser.py).

- runs: the experiment's runs table in the model-training view (MLflow 3 otherwise opens an
  experiment in GenAI mode).
- curves: the metric view, one chart with val accuracy and val loss per epoch of every run.
  Its route needs `metric=` as well as `plot_metric_keys=` (the page refuses a link without
  it as "invalid URL"); the compare-runs page instead first shows a parallel-coordinates plot.
Every JSON value is percent-encoded, so a terminal sees each link as one unbroken token. A
login in the base URL (`http://alice:pw@host`) is left out: the browser asks for it.
"""

from __future__ import annotations

import json
import urllib.parse

from tl.tracking import redact

CURVE_METRICS = ("val_acc", "val_loss")


def _q(value) -> str:
    return urllib.parse.quote(json.dumps(value, separators=(",", ":")), safe="")


def runs_url(base: str, experiment_id: str) -> str:
    return f"{redact.without_login(base)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def curves_url(base: str, experiment_ids: list[str], run_ids: list[str],
               metrics: tuple[str, ...] = CURVE_METRICS) -> str:
    if not run_ids or not metrics:
        raise ValueError("curves_url needs at least one run and one metric")
    return (f"{redact.without_login(base)}/#/metric?runs={_q(list(run_ids))}&metric={_q(metrics[0])}"
            f"&experiments={_q(list(experiment_ids))}&plot_metric_keys={_q(list(metrics))}&x_axis=step")
