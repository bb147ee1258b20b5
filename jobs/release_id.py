"""Release ids: the idempotency key of a release, and a directory name under the output path.

A release id names ``<output>/<release-id>/``, the operator report ``.private/<release-id>.json``
and the ledger's charge, so it is checked before anything else: 1 to 128 characters from
``A-Z a-z 0-9 . _ -``, starting with a letter or digit. No path separators, no leading dot, no
``..``: an id can never point outside the output directory or at a hidden file. Airflow's
``{{ ds }}`` (``2026-11-01``), ``$(date -u +%Y-%m)`` and the generated default
(``20261204T163755Z-a1b2c3``) all fit.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

from dp_ops.errors import SpecError

PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
"""What a release id may be (a full match)."""
_COMPILED = re.compile(PATTERN)


def check(release_id: str) -> str:
    """``release_id`` if it fits :data:`PATTERN`; SpecError (exit 2) saying what fits if not.

    The message does not repeat the id: it may have been made from anything.
    """
    if not isinstance(release_id, str) or not _COMPILED.fullmatch(release_id) or ".." in release_id:
        raise SpecError(
            "--release-id: a release id is 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and "
            "'-', starting with a letter or digit, without '..' (for example 2026-11 or "
            "2026-11-01); it names a directory under the output path"
        )
    return release_id


def new() -> str:
    """A fresh id: the UTC time of the call and 24 random bits (``20261204T163755Z-a1b2c3``)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"
