"""`tl compare`: a sweep's runs side by side, and the answer they give.

Parses nothing itself (tl/cli/main.py does), checks the options, asks `tl.analysis.report` for
the sweep's answer (reading back: tl/tracking/runs.py; groups, tests, verdict: tl/analysis/;
tables and figures: tl/analysis/render.py), prints it, writes it as files, and logs them under
`compare/` of the sweep's parent run so the MLflow UI shows them where the sweep is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tl.analysis import answer, stats
from tl.errors import TLError
from tl.tracking import readback, store

ARTIFACT_DIR = "compare"


def check_options(confidence: float, within: float) -> None:
    if not 0 < confidence < 1:  # also refuses nan
        raise TLError(f"--confidence {confidence} must lie strictly between 0 and 1, e.g. 0.95")
    if not within >= 0:
        raise TLError(f"--within {within} must be a number of accuracy points >= 0, e.g. 1 (= 0.01)")


def run(uri: str, experiment: str, which: str, out: str | None, confidence: float = stats.CONFIDENCE,
        within: float = 1.0) -> int:
    check_options(confidence, within)
    client = readback.open_client(uri)
    parent = readback.find_sweep(client, experiment, which, uri)
    report = answer.report(client, parent.info.run_id, confidence, within)
    if not report.rows:
        raise TLError(f"sweep {parent.info.run_id} has no runs yet: its jobs create them as they start")
    finished = sum(r.status == "FINISHED" for r in report.rows)
    exp = client.get_experiment(parent.info.experiment_id)
    print(f"Sweep {parent.info.run_id} ({parent.info.run_name}) in experiment {exp.name!r}: "
          f"{len(report.rows)} runs, {finished} finished\n")
    print(report.text)
    with tempfile.TemporaryDirectory(prefix="tl-compare-") as tmp:
        files = report.write(Path(out) if out else Path(tmp))
        for f in files:
            client.log_artifact(parent.info.run_id, str(f), ARTIFACT_DIR)
    print(f"\nLogged to the sweep's parent run under {ARTIFACT_DIR}/: {', '.join(f.name for f in files)}"
          + (f" (also written to {out})" if out else ""))
    print(store.ui_hint(uri, parent.info.experiment_id, [r.run_id for r in report.rows]))
    return 0
