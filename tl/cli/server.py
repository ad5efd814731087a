"""`tl server`: the team's MLflow server from conf/server/team.yaml (`tl.tracking.server`
loads, checks and runs it; this starts it)."""

from __future__ import annotations

from pathlib import Path

from tl.tracking import server


def run(overrides: list[str], config: str | None = None) -> int:
    cfg = server.load(overrides, Path(config) if config else None)
    print(server.connect_hint(cfg), flush=True)
    return server.serve(cfg)
