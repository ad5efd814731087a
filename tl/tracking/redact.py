"""Keeping secrets out of what a run records and prints.

Anyone who may read an experiment reads every run's params, tags and artifacts, and a job's
output is often in a shared folder or a cluster's log. So what tl records and prints goes
through here:

- `text`: the password of any `scheme://user:password@host` becomes `***`, and so does the
  value of a password-like query parameter (`?token=...`, `&password=...`).
- `recorded_config`: a config as it is recorded: a value written as an environment
  interpolation (`${oc.env:VAR}`, `${env:VAR}`), or one that resolves through such a value, is
  recorded as the interpolation text, never its value; every string then goes through `text`.
- `protect`: this process's log records are redacted as they are made, Hydra's `.hydra/` and
  `multirun.yaml` files of the current job are redacted in place, and MLflow's own "View run
  at" lines (which print the tracking URI whole) are switched off when the URI holds a login.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.parse
from pathlib import Path

from tl.masking import MASK, text  # noqa: F401  (redact.text: the one masking rule)

_ENV_INTERPOLATION = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:\s*([^,}\s]+)")
INTERPOLATION = re.compile(r"\$\\?\{")  # `${`, or `$\{` as a sweeper escapes it


def without_login(url: str) -> str:
    """A URL for people to open: no `user:password@` in it (the browser asks for the login)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return text(url)
    return text(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))


def has_login(uri: str) -> bool:
    return text(uri) != str(uri) or "@" in urllib.parse.urlsplit(str(uri)).netloc


def env_names(raw: str) -> list[str]:
    """The environment variables an interpolation text reads."""
    return _ENV_INTERPOLATION.findall(raw)


def recorded_config(cfg) -> dict:
    """The config as a plain dict for the record: resolved, except values that are (or read
    through) an environment interpolation, which keep their interpolation text; all redacted."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    raw = OmegaConf.to_container(cfg, resolve=False)
    secrets = sorted({os.environ[n] for r in _leaves(raw) for n in env_names(r) if os.environ.get(n)},
                     key=len, reverse=True)
    return _merge(resolved, raw, secrets)


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    elif isinstance(node, str):
        yield node


def _merge(resolved, raw, secrets: list[str]):
    if isinstance(raw, str) and "${" in raw and (env_names(raw) or any(s in str(resolved) for s in secrets)):
        return text(raw)
    if isinstance(resolved, dict):  # (raw may be an interpolation of a whole node)
        return {k: _merge(v, raw.get(k) if isinstance(raw, dict) else None, secrets) for k, v in resolved.items()}
    if isinstance(resolved, list):
        same = isinstance(raw, list) and len(raw) == len(resolved)
        return [_merge(v, raw[i] if same else None, secrets) for i, v in enumerate(resolved)]
    return text(resolved) if isinstance(resolved, str) else resolved


def config_yaml(cfg) -> str:
    """The config's `config.yaml` as recorded (see `recorded_config`)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(recorded_config(cfg)))


def scrub_file(path: Path) -> None:
    """Redact a text file in place, atomically (a reader sees the old or the new file)."""
    try:
        before = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    after = text(before)
    if after == before:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(after)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def scrub_hydra_output() -> None:
    """Redact the current Hydra job's saved `.hydra/*.yaml` and its sweep's `multirun.yaml`,
    which Hydra writes with the command line's overrides before tl runs."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.output_subdir:  # null: Hydra saved nothing
        for f in sorted((Path(hc.runtime.output_dir) / hc.output_subdir).glob("*.yaml")):
            scrub_file(f)
    if hc.sweep.dir:
        multirun = Path(hc.sweep.dir) / "multirun.yaml"
        if multirun.is_file():
            scrub_file(multirun)


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it for logging to report
        return record
    redacted = text(message)
    if redacted != message:
        record.msg, record.args = redacted, ()
    return record


def redact_logs() -> None:
    """Every log record this process makes from now on is redacted when it is made, so any
    logger and any handler (including ones set up later, e.g. each Hydra job's log file) gets
    it redacted. Wraps whatever record factory is in place."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def make(*args, **kwargs):
        return _redacted(factory(*args, **kwargs))

    make.redacts = True
    logging.setLogRecordFactory(make)


def protect(uri: str | None = None) -> None:
    """Redact this process's logs and the current Hydra job's saved files; with a tracking URI
    that holds a login, keep MLflow from printing it in its "View run at" lines."""
    redact_logs()
    scrub_hydra_output()
    if uri and has_login(uri):
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
