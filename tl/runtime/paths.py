"""Where things live: the project root (MLflow's default store), conf/, and user-given paths."""

from __future__ import annotations

import os
from pathlib import Path

# tl/runtime/paths.py -> the checkout that holds tl/ and conf/.
_CHECKOUT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout tl runs from, so outputs land in one place whatever the cwd.

    An editable install resolves to the repository; any other install falls back to the cwd.
    """
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "conf").is_dir():
        return _CHECKOUT
    return Path.cwd()


def conf_dir() -> Path:
    """The Hydra config groups: the one place every entry point composes from."""
    return _CHECKOUT / "conf"


def launch_dir() -> Path:
    """The directory the user launched from (Hydra may have changed the cwd since)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """A user path: `~` expanded, relative paths taken from the launch directory."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (launch_dir() / p).resolve()
