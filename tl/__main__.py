"""`python -m tl`: the same as the `tl` command."""

from tl.cli.main import entry

entry()
