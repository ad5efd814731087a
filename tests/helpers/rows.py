"""Plain rows as `tl.tracking.runs.collect` reads them back, built directly for analysis tests."""

from tl.tracking.runs import Row


def run(model, strategy, seed, test_acc, seconds, data="pets-0a1b2c3d", val=None, **kw) -> Row:
    return Row(f"{model}-{strategy}-{seed}-{kw.get('varied', '')}", "", kw.pop("status", "FINISHED"), model,
               strategy, data, val if val is not None else test_acc, 3, 0.3, seconds / 2, 1, 2,
               varied=kw.pop("varied", f"trainer.seed={seed}"), data_key=data, seed=seed, test_acc=test_acc,
               total_seconds=seconds, **kw)
