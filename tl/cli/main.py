"""`tl`: the answer for a folder of images, compare a sweep's runs, reproduce a run, list and rank the backbones.

Training itself is `python -m tl.train` (Hydra's command line); these subcommands work on what
runs have logged. Each one imports only what it needs, so `tl --help` is instant.
"""

from __future__ import annotations

import argparse
import sys

from tl.runtime import allocator, collector, neighbours, wait_policy

wait_policy.apply()  # as tl-train's entry: `tl rank` loads torch in this process
allocator.apply()

from tl.cli import runs  # noqa: E402
from tl.errors import TLError  # noqa: E402

URI_HELP = "MLflow tracking URI (default: the project's store, sqlite:///<repo>/mlruns/mlflow.db)"


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0, e.g. 0 or 1e-6")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tl", description="Compare a sweep's runs, reproduce a run, list the backbones, run the team server. "
                               "Train with: python -m tl.train (add -m for a sweep).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compare", help="a sweep's runs side by side: table, intervals, matrix, curves, verdict",
                       description="Rank a sweep's runs per dataset, group seeds with 95%% intervals, mark "
                                   "the Pareto front of accuracy against time, print a backbone x strategy "
                                   "matrix and the verdict, plot the val curves, and log it all under "
                                   "compare/ of the sweep's parent run.")
    c.add_argument("--experiment", default="tl", help="experiment to find the latest sweep in (default: tl)")
    c.add_argument("--sweep", default="latest", metavar="PARENT_RUN_ID|latest",
                   help="the sweep's parent run id (default: latest, the most recently started sweep)")
    c.add_argument("--tracking-uri", help=URI_HELP)
    c.add_argument("--out", metavar="DIR", help="also keep the table and figures in DIR")
    c.add_argument("--confidence", type=float, default=0.95, metavar="C",
                   help="confidence of the intervals over seeds; 1 - C is the test's level (default: 0.95)")
    c.add_argument("--within", type=float, default=1.0, metavar="POINTS",
                   help="the verdict names the cheapest configuration within POINTS accuracy points "
                        "of the best (default: 1, i.e. 0.01)")

    r = sub.add_parser("reproduce", help="re-run a run from its logged config and compare its metrics",
                       description="Recompose a run's config from its saved Hydra overrides, check it "
                                   "equals the logged config.yaml, train it again as a new run tagged "
                                   "tl.reproduces, and compare every per-epoch metric. Exit status: 0 "
                                   "identical within tolerance, 1 metrics differ, 2 cannot reproduce.")
    r.add_argument("run_id", metavar="RUN_ID")
    r.add_argument("--tracking-uri", help=URI_HELP)
    r.add_argument("--tolerance", type=_tolerance, default=None, metavar="X",
                   help="largest allowed absolute difference per value (default: 0, exact, on CPU; "
                        "1e-4 when either run used a GPU)")

    m = sub.add_parser("models", help="backbones tl can use, and which have weights offline",
                       description="List tl's presets, torchvision classifiers and timm models "
                                   "matching PATTERN, marking those whose weights are on this machine.")
    m.add_argument("pattern", nargs="?", default="*", metavar="PATTERN",
                   help="fnmatch pattern, e.g. 'res*' or '*vit*' (default: all)")

    s = sub.add_parser("server", help="run the team's MLflow server (PostgreSQL, served artifacts, logins)",
                       description="Start MLflow's tracking server from conf/server/team.yaml: runs in "
                                   "PostgreSQL, artifacts served through the server, MLflow's basic-auth "
                                   "logins. The admin's login comes from MLFLOW_AUTH_ADMIN_USERNAME / "
                                   "MLFLOW_AUTH_ADMIN_PASSWORD. Runs until Ctrl-C or SIGTERM.")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. port=5001 host=0.0.0.0 auth.default_permission=READ")
    s.add_argument("--config", metavar="PATH", help="another server config (default: conf/server/team.yaml)")

    k = sub.add_parser("rank", help="score backbones on a dataset from one frozen pass each (LogME, k-NN)",
                       description="Run each backbone frozen over the dataset once (through the freeze "
                                   "feature cache), score its features (LogME, k-NN val accuracy), print "
                                   "and log the ranking, and print the tl-train line for the top-k.")
    k.add_argument("overrides", nargs="+", metavar="OVERRIDE",
                   help="models=[PRESET,...] and Hydra overrides as for tl-train, e.g. dataset=imagefolder dataset.root=PATH")
    k.add_argument("--top-k", type=int, default=3, metavar="K", help="backbones in the tl-train line (default: 3)")
    k.add_argument("--strategies", default="finetune", metavar="S1,S2",
                   help="strategies in the tl-train line (default: finetune)")
    k.add_argument("--tracking-uri", help=URI_HELP)
    a = sub.add_parser("answer", help="the best backbone and strategy for a folder of images, raced under a budget",
                       description="Screen the backbones (one frozen pass, LogME, k-NN, a tuned head), race "
                                   "every strategy at its own learning rates by successive halving, confirm the "
                                   "finalists with 3 seeds, and print the verdict and the tl-train line of the winner.")
    a.add_argument("path", metavar="PATH", help="a folder of class folders (train/ val/ [test/], or one per class)")
    a.add_argument("--budget", default="30m", help="wall clock for the whole answer, e.g. 20m, 1h (default: 30m)")
    a.add_argument("--resume", metavar="PARENT_RUN_ID", help="reuse the trials an earlier answer finished")
    a.add_argument("--tracking-uri", help=URI_HELP)
    a.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="models=[PRESET,...] strategies=[...] and tl-train overrides, e.g. model.input_size=160")

    runs.add_parser(sub, URI_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and (args.command != "answer" or any(e.startswith("-") for e in extra)):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # `tl answer PATH --budget 30m models=[...]`: overrides after the options too
        args.overrides = [*args.overrides, *extra]
    from tl.tracking import store

    uri = getattr(args, "tracking_uri", None) or store.default_uri()
    # Each command's module is imported when it runs, not above: `tl --help` stays instant.
    try:
        if args.command == "compare":
            from tl.cli import compare

            return compare.run(uri, args.experiment, args.sweep, args.out, args.confidence, args.within)
        if args.command == "answer":
            from tl.cli import answer

            return answer.run(args.path, args.budget, args.overrides, args.resume, args.tracking_uri)
        if args.command == "server":
            from tl.cli import server

            return server.run(args.overrides, args.config)
        if args.command == "rank":
            from tl.cli import rank

            return rank.run(args.overrides, args.tracking_uri, args.top_k,
                            [s for s in args.strategies.split(",") if s])
        if args.command == "runs":
            return runs.run(args, uri)
        if args.command == "reproduce":
            from tl.cli import reproduce

            return reproduce.run(uri, args.run_id, args.tolerance)
        from tl.cli import catalog

        return catalog.run(args.pattern)
    except TLError as e:
        print(f"tl {args.command}: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `tl` command: main()'s exit status, after a shutdown that does not scan what lives
    until exit (`tl.runtime.collector`: 2 s saved once torch and MLflow are loaded). Its
    start opens the window that decides the threads of the runs it makes (`tl rank`), as
    tl-train's does; `main()` called as a library leaves them every usable CPU."""
    neighbours.mark()
    code = main()
    collector.before_exit()
    sys.exit(code)
