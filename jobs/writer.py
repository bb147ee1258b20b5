"""Release directories on any store, committed by their manifest (no rename).

Layout: ``<output>/<release-id>/<table>/`` (Parquet or CSV) and
``<output>/<release-id>/manifest.json``; ``<output>/.private/`` holds the operator's reports and
quarantine (owner-only where the store has permissions).

The commit protocol, the same on a local disk, HDFS and object stores (:mod:`jobs.storage`):

1. an attempt claims ``<output>/<release-id>/`` by creating the marker
   ``_dprelease_attempt`` in it (a new file; a release directory without the marker and without
   a complete manifest is never touched: it is someone else's);
2. the tables are written under the release's directory, and checked;
3. the manifest is written last, as one new small file: it is the commit. Readers, reruns and
   :func:`is_released` trust a release only when its manifest is complete (it parses and names
   this release id); the marker is then removed.

An attempt that fails removes its directory; one killed mid-write (kill -9, a lost driver) leaves
it, with its marker and no complete manifest, and the next attempt of the release id deletes it
before writing. Run one attempt of a release id at a time (a scheduler's ``max_active_runs=1``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from dp_ops.errors import InternalError, SpecError
from jobs.storage import Store, join, scheme, store_path

MANIFEST = "manifest.json"
ATTEMPT = "_dprelease_attempt"
"""Marker of an attempt's release directory that is not committed yet."""
PRIVATE = ".private"
"""``<output>/.private``: the operator's reports and quarantine, never published."""


def release_location(store: Store, output: str, release_id: str) -> str:
    """``<output>/<release-id>`` in the store's form."""
    return join(store_path(store, output), release_id)


def location_name(output: str, release_id: str) -> str:
    """The release's location as the ledger and the operator see it, whatever reaches it: an
    absolute local path, or the URI as ``output.path`` gave it."""
    if scheme(output) is None:
        return str(Path(output).absolute() / release_id)
    return join(output, release_id)


def read_manifest(store: Store, output: str, release_id: str) -> dict[str, Any] | None:
    """The release's manifest when it is complete (parses, names this release id), else None."""
    data = store.read(join(release_location(store, output, release_id), MANIFEST))
    if data is None:
        return None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError:  # cut short by a crash mid-write: not a commit
        return None
    if not isinstance(manifest, dict) or manifest.get("release_id") != release_id:
        return None
    if not isinstance(manifest.get("tables"), list):
        return None
    return manifest


def is_released(store: Store, output: str, release_id: str) -> bool:
    return read_manifest(store, output, release_id) is not None


def _abandoned(store: Store, final: str) -> bool:
    """An attempt's directory without a commit: empty, or holding the attempt marker."""
    names = store.names(final)
    return not names or ATTEMPT in names


def _not_ours(release_id: str, final: str) -> SpecError:
    return SpecError(
        f"release id {release_id!r}: {final!r} already exists and was not made by a release "
        "attempt; move it away or choose another release id"
    )


def _writable_dir(store: Store, path: str, what: str) -> None:
    """SpecError unless ``path`` is a directory this process can create entries in."""
    if not store.is_dir(path):
        raise SpecError(
            f"output.path: {what} {path!r} is not a directory; point output.path (or "
            "--output) at a directory, or at a path that does not exist yet"
        )
    if not store.writable(path):
        raise SpecError(
            f"output.path: {what} {path!r} is not writable by this user; choose another "
            "output path or fix its permissions"
        )


def check_location(store: Store, output: str, release_id: str) -> None:
    """Check the release's location: everything about it that can fail is checked without
    writing: the output path is (or can be made) a writable directory, its ``.private`` entry is
    a directory if it exists, and ``<output>/<release-id>`` is free (absent, empty, a published
    release of this id, or an attempt of it that did not commit). SpecError (exit 2) naming the
    path and the fix otherwise, before any budget is charged.
    """
    root = store_path(store, output)
    if store.exists(root):
        _writable_dir(store, root, "the output directory")
    elif store.kind == "local":
        parent = os.path.dirname(os.path.abspath(root))
        while not store.exists(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        _writable_dir(store, parent, "the nearest existing parent of the output path,")
    entry = join(root, PRIVATE)
    if store.exists(entry) and not store.is_dir(entry):
        raise SpecError(
            f"output.path: {entry!r} must be a directory (dprelease keeps the operator's "
            "reports and quarantine there); move the file away"
        )
    final = join(root, release_id)
    if store.exists(final):
        if not store.is_dir(final):
            raise _not_ours(release_id, final)
        if not is_released(store, output, release_id) and not _abandoned(store, final):
            raise _not_ours(release_id, final)


@contextmanager
def release_attempt(store: Store, output: str, release_id: str) -> Iterator[str]:
    """Claim ``<output>/<release-id>/`` for this attempt and yield it; the caller writes the
    tables there and :func:`write_manifest` last. A directory left by a killed attempt of this
    release id is deleted first. On an error before the commit the directory is removed."""
    final = release_location(store, output, release_id)
    if store.exists(final):
        if is_released(store, output, release_id):
            raise InternalError("a published release must not be written again")
        if not store.is_dir(final) or not _abandoned(store, final):
            raise _not_ours(release_id, final)
        store.delete(final)  # a killed attempt's tables: never committed, never trusted
    store.mkdirs(final)
    marker = {
        "attempt": uuid.uuid4().hex,
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        store.create_new(join(final, ATTEMPT), json.dumps(marker).encode())
    except FileExistsError:
        raise SpecError(
            f"release id {release_id!r}: another attempt is writing {final!r}; run one attempt "
            "of a release id at a time"
        ) from None
    committed = False
    try:
        yield final
        committed = is_released(store, output, release_id)
        if not committed:
            raise InternalError("the manifest must be written before the commit")
    finally:
        if committed:
            store.delete(join(final, ATTEMPT))
        else:
            with suppress(Exception):  # else the next attempt deletes it
                store.delete(final)


def write_manifest(store: Store, final: str, manifest: dict[str, Any]) -> None:
    """The commit: the manifest as one new file in the release's directory."""
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    store.create_new(join(final, MANIFEST), text.encode("utf-8"))


def private_dir(store: Store, output: str) -> str:
    """``<output>/.private``: owner-only (mode 700 where the store has permissions), never
    published."""
    private = join(store_path(store, output), PRIVATE)
    store.mkdirs(private, private=True)
    return private


def write_quarantine(store: Store, rows: DataFrame, output: str, release_id: str) -> str:
    """Write invalid rows to ``<output>/.private/quarantine/<release-id>/`` (Parquet, owner-only
    where the store has permissions).

    A rerun of the release id replaces them, so a retry leaves one copy.
    """
    root = join(private_dir(store, output), "quarantine")
    store.mkdirs(root, private=True)
    path = join(root, release_id)
    rows.write.mode("overwrite").parquet(path)
    store.make_private(path)
    return path


def write_report(store: Store, output: str, release_id: str, report: dict[str, Any]) -> str:
    """The operator-only run report ``<output>/.private/<release-id>.json``; a rerun replaces
    it."""
    path = join(private_dir(store, output), f"{release_id}.json")
    store.replace(path, json.dumps(report, indent=2).encode("utf-8"), private=True)
    return path
