"""The answer: which backbone and which transfer strategy work best on these images, each
strategy at its own tuned recipe, raced under a time budget (`hydra/sweeper=answer`, `tl answer`).

- `space`: the search space (backbone x strategy x a per-strategy learning-rate grid);
- `schedule`: the rungs of successive halving and who is promoted;
- `budget`: the wall-clock budget and the cost estimates from measured rates;
- `race`: screen -> race -> confirm, over any `Runner` (Hydra's launchers in `hydra_jobs`);
- `report`: what was tried, the ranking scores against the outcome, the figures; `outcome`
  hands the confirmed runs to the same analysis as `tl compare`;
- `sweeper`: the Hydra sweeper's body (`hydra_plugins.tl_answer` registers it).
"""
