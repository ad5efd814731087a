"""The `tl` command (`main`) and its subcommands: `compare`, `reproduce`, `models` (`catalog`)."""
