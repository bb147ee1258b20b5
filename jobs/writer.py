"""Atomic release directories: staging, then one rename; the manifest is written last.

Layout: ``<output>/<release-id>/<table>/`` (Parquet or CSV) and
``<output>/<release-id>/manifest.json``.
Everything is first written to ``<output>/.staging/<release-id>-<random>/`` and the directory is
renamed into place in one step, so a crash never leaves a half-written release visible. A release
id that already exists is never written again.

The output must be a local (or ``file://``) path: the commit relies on an atomic directory rename.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from dp_ops.errors import InternalError, SpecError

STAGING = ".staging"
_ATTEMPT_CHARS = 12
"""Hex characters of the random suffix naming one attempt's staging directory."""
MANIFEST = "manifest.json"
PRIVATE = ".private"
"""``<output>/.private``: the operator's reports and quarantine, never published."""


def local_path(path: str) -> Path:
    if path.startswith("file://"):
        return Path(path[len("file://") :])
    if "://" in path:
        raise SpecError(
            f"output.path: {path!r} is not a local path; this version commits releases with an "
            "atomic directory rename on a local or shared POSIX file system"
        )
    return Path(path)


def release_dir(output: str, release_id: str) -> Path:
    return local_path(output) / release_id


def is_released(output: str, release_id: str) -> bool:
    return (release_dir(output, release_id) / MANIFEST).exists()


def released_spec(output: str, release_id: str) -> str | None:
    """The spec SHA-256 in the manifest of a published release (None if none can be read)."""
    try:
        manifest = json.loads((release_dir(output, release_id) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    value = manifest.get("spec_sha256") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def _writable_dir(path: Path, what: str) -> None:
    """SpecError unless ``path`` is a directory this process can create entries in."""
    if not path.is_dir():
        raise SpecError(
            f"output.path: {what} {str(path)!r} is not a directory; point output.path (or "
            "--output) at a directory, or at a path that does not exist yet"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise SpecError(
            f"output.path: {what} {str(path)!r} is not writable by this user; choose another "
            "output path or fix its permissions"
        )


def check_location(output: str, release_id: str) -> Path:
    """The release's directory (absolute), once everything about it that can fail is checked
    without writing: the output path is (or can be made) a writable directory, its ``.staging``
    and ``.private`` entries are directories if they exist, and ``<output>/<release-id>`` is free
    (absent, an empty directory, or a published release of this id). SpecError (exit 2) naming
    the path and the fix otherwise, before any budget is charged.
    """
    root = local_path(output).absolute()
    if root.exists():
        _writable_dir(root, "the output directory")
    else:
        parent = root.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        _writable_dir(parent, "the nearest existing parent of the output path,")
    for name in (STAGING, PRIVATE):
        entry = root / name
        if entry.exists() and not entry.is_dir():
            raise SpecError(
                f"output.path: {str(entry)!r} must be a directory (dprelease keeps its staging "
                "area and operator reports there); move the file away"
            )
    final = root / release_id
    published = final.is_dir() and not final.is_symlink() and (final / MANIFEST).exists()
    empty_dir = final.is_dir() and not final.is_symlink() and not any(final.iterdir())
    if (final.exists() or final.is_symlink()) and not (published or empty_dir):
        raise SpecError(
            f"release id {release_id!r}: {str(final)!r} already exists and was not made by a "
            "completed release; move it away or choose another release id"
        )
    return final


@contextmanager
def staged_release(output: str, release_id: str) -> Iterator[Path]:
    """Yield a private staging directory; on normal exit it becomes ``<output>/<release-id>``.

    A process killed mid-write leaves its staging directory behind (invisible, never
    published); the next attempt of the same release id removes it. Run one attempt of a
    release id at a time (a scheduler's ``max_active_runs=1``).
    """
    root = local_path(output)
    staging_root = root / STAGING
    staging_root.mkdir(parents=True, exist_ok=True)
    os.chmod(staging_root, 0o700)
    for stale in staging_root.glob(f"{release_id}-*"):  # left by a killed attempt of this id
        if stale.is_dir() and len(stale.name) == len(release_id) + 1 + _ATTEMPT_CHARS:
            shutil.rmtree(stale, ignore_errors=True)
    staging = staging_root / f"{release_id}-{uuid.uuid4().hex[:_ATTEMPT_CHARS]}"
    staging.mkdir(mode=0o700)
    try:
        yield staging
        if not (staging / MANIFEST).exists():
            raise InternalError("the manifest must be written before the commit")
        os.chmod(staging, 0o755)
        final = root / release_id
        try:
            os.rename(staging, final)
        except OSError:
            raise SpecError(
                f"release id {release_id!r}: {str(final)!r} already exists and was not made by a "
                "completed release; move it away or choose another release id"
            ) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def private_dir(output: str) -> Path:
    """``<output>/.private``: operator-only (mode 700), beside the staging area, never published."""
    private = local_path(output) / PRIVATE
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    return private


def write_quarantine(rows: DataFrame, output: str, release_id: str) -> Path:
    """Write invalid rows to ``<output>/.private/quarantine/<release-id>/`` (Parquet, owner-only).

    A rerun of the release id replaces them, so a retry leaves one copy.
    """
    root = private_dir(output) / "quarantine"
    root.mkdir(mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    path = root / release_id
    rows.write.mode("overwrite").parquet(str(path))
    for directory, _, files in os.walk(path):
        os.chmod(directory, 0o700)
        for f in files:
            os.chmod(os.path.join(directory, f), 0o600)
    return path


def write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    tmp = staging / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, staging / MANIFEST)
