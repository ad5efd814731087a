"""Secrets masked in any text: the one rule that `tl.errors` (every user-facing message) and
`tl.tracking.redact` (everything a run records and prints) apply. It imports nothing of tl, so
the lowest layer can use it."""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@ : the password runs to the last `@` before the host's path, so a
# password holding a raw `@` is masked whole. Hydra's sweepers escape `:` (and `\`, `=`, `,`,
# brackets, spaces) in each job's overrides: `http\://alice\:pw@host` is a login too.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://(?:\\[^:]|[^\s/?#@:'\"\\])*\\?:)"
                       r"(?P<pw>(?:\\.|[^\s/?#'\"\\])*)@")
_SECRET_PARAM = re.compile(
    r"(?P<head>[?&;](?:[A-Za-z0-9]+[_.\-])*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|"
    r"signature|sig|credentials?)(?:[_.\-][A-Za-z0-9]+)*=)(?P<value>[^&;#\s'\"]+)", re.IGNORECASE)


def text(value) -> str:
    """`value` as a string with every URI password and secret query value masked."""
    s = str(value)
    s = _USERINFO.sub(lambda m: m.group("head") + (MASK if m.group("pw") else "") + "@", s)
    return _SECRET_PARAM.sub(lambda m: m.group("head") + MASK, s)
