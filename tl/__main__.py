"""`python -m tl`: the same as the `tl` command."""

from tl.cli import main

raise SystemExit(main())
