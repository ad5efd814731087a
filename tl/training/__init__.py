"""A run from config to result: the run's lifecycle (`run`), what it trains on (`jobs`), the epoch
loop (`loop`, `engine`), transfer strategies, optimizers, the frozen-feature cache, checkpoints,
resume, diagnostics, and the config checks made before any work (`validate`)."""
