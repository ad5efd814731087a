"""A run trained to a rung of a race: `trainer.stop_after=R` trains epochs 1..R of its
`trainer.epochs`-long schedule and ends FINISHED, tagged with where and why it stopped, keeping
`last.pt`, so `+resume=RUN_ID` continues the same run as if it had never stopped (its curve so
far is the exact prefix of the full run's)."""

from __future__ import annotations

from tl.errors import ConfigError

STOPPED_AT = "tl.answer.stopped_at"  # the last epoch a stopped run trained
STOP_REASON = "tl.answer.stop_reason"


def check(trainer) -> None:
    value = trainer.get("stop_after")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"trainer.stop_after={value!r} must be a positive integer (or null: train every epoch)")


def last_epoch(trainer) -> int:
    """The last epoch this process trains: `stop_after`, or every epoch of the schedule."""
    stop = trainer.get("stop_after")
    return trainer.epochs if stop is None else min(int(stop), int(trainer.epochs))


def mark_stopped(client, run_id: str, epoch: int, epochs: int) -> None:
    client.set_tag(run_id, STOPPED_AT, str(epoch))
    client.set_tag(run_id, STOP_REASON, f"trained to rung {epoch} of its {epochs}-epoch schedule; "
                                        f"continue it with: tl-train +resume={run_id}")


def stopped_at(tags: dict) -> int | None:
    value = tags.get(STOPPED_AT)
    return int(value) if value and value.isdigit() else None


def check_continues(run_id: str, stopped: int, epochs: int, stop_after) -> None:
    """A stopped run continues to a later rung (or to the end), never to one it has passed."""
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int)
                                   or stop_after <= stopped):
        raise ConfigError(f"resume={run_id} stopped after epoch {stopped} of {epochs}: trainer.stop_after="
                          f"{stop_after!r} must be a later epoch (or left out: train to the end)")
