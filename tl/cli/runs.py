"""`tl runs close-stale`: close runs left RUNNING by a process that is gone (SIGKILL, a lost
node, a store that refused the final status write), so tables and resumes see the truth."""

from __future__ import annotations

import argparse


def add_parser(sub, uri_help: str) -> None:
    r = sub.add_parser("runs", help="look after runs in the store: close-stale marks dead RUNNING runs KILLED",
                       description="Manage runs in the store.")
    rs = r.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    c = rs.add_parser("close-stale", help="mark RUNNING runs whose process is gone as KILLED",
                      description="Mark KILLED every RUNNING run whose process (its tl.host and tl.pid "
                                  "tags) is gone from this host, with a tl.error tag saying so. Runs of "
                                  "other hosts, or without those tags, only with --force.")
    c.add_argument("--force", action="store_true",
                   help="also close RUNNING runs this host cannot check (other hosts, no process tags)")
    c.add_argument("--tracking-uri", help=uri_help)


def run(args: argparse.Namespace, uri: str) -> int:
    from tl.tracking import store
    from tl.training import lifecycle

    with store.writable(uri):
        closed, left = lifecycle.close_stale(store.client_for(uri), force=args.force)
    for line in closed:
        print(f"closed {line}")
    for line in left:
        print(f"left   {line}")
    if not closed and not left:
        print(f"no RUNNING runs in {uri}")
    return 0
