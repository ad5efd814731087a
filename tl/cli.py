"""`tl`: compare a sweep's runs, reproduce a run, list and rank the backbones.

Training itself is `python -m tl.train` (Hydra's command line); these subcommands work on what
runs have logged. Each one imports only what it needs, so `tl --help` is instant.
"""

from __future__ import annotations

import argparse
import sys

from tl.errors import TLError


def _uri_help() -> str:
    return "MLflow tracking URI (default: the project's store, sqlite:///<repo>/mlruns/mlflow.db)"


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
        prog="tl", description="Compare a sweep's runs, reproduce a run, list the backbones. "
                               "Train with: python -m tl.train (add -m for a sweep).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compare", help="a sweep's runs side by side: table, matrix, curves",
                       description="Rank a sweep's runs, print a backbone x strategy matrix, plot "
                                   "their val curves, and log it all under compare/ of the sweep's parent run.")
    c.add_argument("--experiment", default="tl", help="experiment to find the latest sweep in (default: tl)")
    c.add_argument("--sweep", default="latest", metavar="PARENT_RUN_ID|latest",
                   help="the sweep's parent run id (default: latest, the most recently started sweep)")
    c.add_argument("--tracking-uri", help=_uri_help())
    c.add_argument("--out", metavar="DIR", help="also keep the table and figures in DIR")

    r = sub.add_parser("reproduce", help="re-run a run from its logged config and compare its metrics",
                       description="Recompose a run's config from its saved Hydra overrides, check it "
                                   "equals the logged config.yaml, train it again as a new run tagged "
                                   "tl.reproduces, and compare every per-epoch metric. Exit status: 0 "
                                   "identical within tolerance, 1 metrics differ, 2 cannot reproduce.")
    r.add_argument("run_id", metavar="RUN_ID")
    r.add_argument("--tracking-uri", help=_uri_help())
    r.add_argument("--tolerance", type=_tolerance, default=None, metavar="X",
                   help="largest allowed absolute difference per value (default: 0, exact, on CPU; "
                        "1e-4 when either run used a GPU)")

    m = sub.add_parser("models", help="backbones tl can use, and which have weights offline",
                       description="List tl's presets, torchvision classifiers and timm models "
                                   "matching PATTERN, marking those whose weights are on this machine.")
    m.add_argument("pattern", nargs="?", default="*", metavar="PATTERN",
                   help="fnmatch pattern, e.g. 'res*' or '*vit*' (default: all)")

    k = sub.add_parser("rank", help="score backbones on a dataset from one frozen pass each (LogME, k-NN)",
                       description="Run each backbone frozen over the dataset once (through the freeze "
                                   "feature cache), score its features (LogME, k-NN val accuracy), print "
                                   "and log the ranking, and print the tl-train line for the top-k.")
    k.add_argument("overrides", nargs="+", metavar="OVERRIDE",
                   help="models=[PRESET,...] and Hydra overrides as for tl-train, e.g. dataset=imagefolder dataset.root=PATH")
    k.add_argument("--top-k", type=int, default=3, metavar="K", help="backbones in the tl-train line (default: 3)")
    k.add_argument("--strategies", default="finetune", metavar="S1,S2",
                   help="strategies in the tl-train line (default: finetune)")
    k.add_argument("--tracking-uri", help=_uri_help())
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from tl import tracking

    uri = getattr(args, "tracking_uri", None) or tracking.default_uri()
    try:
        if args.command == "compare":
            from tl import compare

            return compare.run(uri, args.experiment, args.sweep, args.out)
        if args.command == "rank":
            from tl import rank

            return rank.run(args.overrides, args.tracking_uri, args.top_k,
                            [s for s in args.strategies.split(",") if s])
        if args.command == "reproduce":
            from tl import reproduce

            return reproduce.run(uri, args.run_id, args.tolerance)
        from tl import catalog

        return catalog.run(args.pattern)
    except TLError as e:
        print(f"tl {args.command}: error: {e}", file=sys.stderr)
        return 2
