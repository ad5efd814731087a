"""The process a run lives in: device, precision and workers (`machine`, `probe`, `precision`),
threads in parallel sweeps (`parallel`), seeding, signals, paths, file writes (`io`) and progress."""
