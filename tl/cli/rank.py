"""`tl rank`: which backbones are worth training, from one frozen pass each, before a sweep.

    tl rank dataset=imagefolder dataset.root=PATH models=[efficientnet_lite0,efficientnet_lite2,resnet18_scratch]

`tl.training.ranking` scores and logs the ranking; this prints it and the top-k's `tl-train` line.
"""

from __future__ import annotations

from tl.training import ranking


def _starting(preset: str) -> None:
    print(f"ranking {preset} ...", flush=True)


def run(args: list[str], tracking_uri: str | None, top_k: int, strategies: list[str]) -> int:
    """`tl rank`: exit status 0 when at least one backbone was scored, 1 when none could be."""
    r = ranking.rank(args, tracking_uri, top_k, strategies, _starting)
    print(f"\nBackbones ranked by LogME on {r.data_id} ({r.base.dataset.name}), one frozen pass each:\n")
    print("\n".join(r.lines))
    for note in ranking.sanity_notes(r.scores):
        print(note)
    run_id = ranking.log_run(r.uri, r.base.tracking.experiment, r.scores, r.base.dataset, r.data_id, r.lines,
                             r.command, args)
    print(f"\nLogged as run {run_id} (tl.kind={ranking.KIND}) under {ranking.ARTIFACT_DIR}/: "
          "table.md, scores.csv, scores.png")
    if r.command is None:
        print("No backbone could be scored: see the errors above.")
        return 1
    print(f"\nTrain the top {min(top_k, sum(s.logme is not None for s in r.scores))}:\n  {r.command}")
    return 0
