"""The answer of a sweep as one call: read its runs back, analyse them once, and render the
text, markdown, CSV and figures. `tl compare` prints it; the answer sweeper reads `.text` or
`.markdown` of the same object."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tl.analysis import agreement, groups, render, stats, verdict
from tl.tracking import readback, runs


@dataclass
class Report:
    title: str  # the sweep's name, else its parent run id
    parent_run_id: str
    experiment_id: str
    rows: list[runs.Row]  # ranked per dataset
    datasets: dict[str, groups.Dataset]
    within: float
    agreement: str | None = None  # whether a `tl rank` of the same data predicted the results

    @cached_property
    def verdicts(self) -> dict[str, list[str]]:
        """Per dataset key, its verdict's lines."""
        return {key: verdict.lines(ds, self.within) for key, ds in self.datasets.items()}

    @property
    def text(self) -> str:
        """The tables, matrices, verdicts and the ranking agreement, as `tl compare` prints them."""
        lines = render.text(self.rows, self.datasets, self.verdicts)
        return "\n".join(lines + (["", self.agreement] if self.agreement else []))

    @property
    def verdict_text(self) -> str:
        return "\n".join(f"{self.datasets[key].label}:\n" + "\n".join("  " + x for x in lines)
                         for key, lines in self.verdicts.items())

    @property
    def markdown(self) -> str:
        """table.md: runs, groups with their verdicts, matrices."""
        return render.markdown(self.title, self.parent_run_id, self.rows, self.datasets, self.verdicts)

    def write(self, folder: Path) -> list[Path]:
        """table.md, runs.csv, curves.png, matrix.png, and pareto.png / verdict.md where there is one."""
        folder.mkdir(parents=True, exist_ok=True)
        mats = render.matrices(self.datasets)
        files = [folder / "table.md", folder / "runs.csv", folder / "curves.png", folder / "matrix.png"]
        files[0].write_text(self.markdown)
        files[1].write_text(render.csv_text(self.rows))
        render.plot_curves(self.rows).savefig(files[2], dpi=110)
        render.plot_matrix(mats).savefig(files[3], dpi=110)
        if any(ds.cost_key and ds.groups for ds in self.datasets.values()):
            files.append(folder / "pareto.png")
            render.plot_pareto(self.datasets).savefig(files[-1], dpi=110)
        if any(ds.groups for ds in self.datasets.values()):
            files.append(folder / "verdict.md")
            files[-1].write_text(verdict.markdown(self.title, {k: d for k, d in self.datasets.items() if d.groups},
                                                  self.within))
        return files


def analyse(rows: list[runs.Row], title: str = "", parent_run_id: str = "", experiment_id: str = "",
            confidence: float = stats.CONFIDENCE, within: float = 1.0) -> Report:
    """The report of rows already read back (no store needed)."""
    datasets = groups.analyse(rows, confidence)
    return Report(title, parent_run_id, experiment_id, groups.by_rank(rows, datasets), datasets, within)


def report(client_or_uri, parent_run_id: str, confidence: float = stats.CONFIDENCE, within: float = 1.0,
           with_agreement: bool = True) -> Report:
    """The answer of the sweep whose parent run is `parent_run_id`, from a client or a store URI."""
    uri = client_or_uri if isinstance(client_or_uri, str) else "this store"
    client = readback.open_client(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    parent = readback.get_run(client, parent_run_id, uri)
    exp = parent.info.experiment_id
    rows = runs.collect(client, parent_run_id, exp)
    out = analyse(rows, parent.info.run_name or parent_run_id, parent_run_id, exp, confidence, within)
    if with_agreement:
        out.agreement = agreement.sweep_agreement(client, exp, out.rows, out.datasets)
    return out
