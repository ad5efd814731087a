"""The answer a sweep gives: seed groups and their intervals (`groups`, `stats`), the
accuracy-cost Pareto front (`pareto`), the verdict in words (`verdict`), whether a ranking held
(`agreement`), everything shown (`render`), and transferability scores of frozen features
(`transferability`). `report(client_or_uri, parent_run_id)` is the whole answer in one call
(`answer.Report`: `.text`, `.markdown`, `.write(folder)`)."""


def __getattr__(name: str):
    # Not imported at the top: `import tl.analysis.transferability` must not pull in MLflow.
    if name == "report":
        from tl.analysis.answer import report

        return report
    raise AttributeError(f"module 'tl.analysis' has no attribute {name!r}")
