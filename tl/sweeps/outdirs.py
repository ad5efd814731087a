"""Output folders that two runs or sweeps started in the same second never share.

Hydra names its folders with `${now:...}`, to the second: two processes started together then
wrote one `.hydra/`, and one run's `hydra/` artifact held the other's overrides (which
`tl reproduce` refuses as altered). conf/train.yaml adds `${tl.unique:}`, this process's id
and a few random characters, fixed for the life of the process.

The resolver is registered when `tl.sweeps` is imported: by `tl.train` before Hydra composes,
and by Hydra's own scan of `hydra_plugins` (tl's launchers import this package), so every
composition of conf/train.yaml can resolve it.
"""

from __future__ import annotations

import functools
import os
import secrets

from omegaconf import OmegaConf

RESOLVER = "tl.unique"


@functools.cache
def unique() -> str:
    # The pid tells apart processes on one host; the random part, hosts sharing a filesystem.
    return f"{os.getpid()}-{secrets.token_hex(2)}"


def register() -> None:
    # use_cache: a job's config, recomposed or sent to another process, keeps the launching
    # process's value (Hydra copies the resolver cache into each job's config, as for `now`).
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, unique, use_cache=True)
