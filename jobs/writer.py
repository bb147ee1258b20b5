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
before writing.

The marker is a lease: it names the attempt (a random token), its host and process, and when it
was last renewed; a thread renews it every ``RENEW_SECONDS``. Another attempt of the release id
takes the directory over only when the holder is gone: its process no longer runs on this host,
or (a driver on another host) its lease was not renewed for ``LEASE_SECONDS``. Until then it is
refused (exit 2), so a scheduler's retry while the first attempt still runs cannot delete that
attempt's tables or mix its own into them. An attempt whose marker is no longer its own stops
before its next table and never commits or deletes the directory. Leases compare the hosts'
clocks: keep them within ``LEASE_SECONDS - RENEW_SECONDS`` of each other (NTP does).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from dp_ops.errors import InternalError, RerunError, SpecError
from jobs.storage import Store, join, scheme, store_path

MANIFEST = "manifest.json"
ATTEMPT = "_dprelease_attempt"
"""Marker of an attempt's release directory that is not committed yet."""
PRIVATE = ".private"
"""``<output>/.private``: the operator's reports and quarantine, never published."""
LEASE_SECONDS = 120.0
"""An attempt's claim on its directory lapses when not renewed for this long."""
RENEW_SECONDS = 20.0
"""How often a running attempt renews its claim."""

_held: dict[str, str] = {}
"""Release directory -> the token of the attempt this process runs there."""


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later process
    that got the same id; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _host() -> str:
    """This host and process namespace: process ids are compared only within it (two containers
    may share a host name, not their process ids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}".strip()


def _running_here(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return started is None or _process_start(pid) in (None, started)


def _marker(token: str) -> bytes:
    pid = os.getpid()
    return json.dumps(
        {
            "attempt": token,
            "host": _host(),
            "pid": pid,
            "pid_started": _process_start(pid),
            "renewed_utc": _now().isoformat(timespec="seconds"),
        }
    ).encode()


def _holder(store: Store, final: str) -> dict[str, Any] | None:
    """The marker of a live attempt in ``final``; None when the directory is free to claim
    (empty, or its attempt is gone: see the module docstring)."""
    names = store.names(final)
    if not names:
        return None
    if ATTEMPT not in names:
        raise _not_ours(final)
    try:
        marker = _read_marker(store, final)
        renewed = dt.datetime.fromisoformat(marker["renewed_utc"])
        pid, host = int(marker["pid"]), str(marker["host"])
    except (ValueError, KeyError, TypeError):
        return None  # cut short by a kill while it was written, or of an older version
    if host == _host() and not _running_here(pid, marker.get("pid_started")):
        return None
    if (_now() - renewed).total_seconds() > LEASE_SECONDS:
        return None
    return marker if isinstance(marker, dict) else None


def _read_marker(store: Store, final: str, tries: int = 4) -> Any:
    """The marker's JSON. A renewal rewrites it in place (Hadoop's and the local disk's
    overwrite truncate first), so a marker that does not parse is read again, a little later,
    before it counts as cut short; ValueError if it stays so."""
    for attempt in range(tries):
        try:
            return json.loads(store.read(join(final, ATTEMPT)) or b"")
        except ValueError:
            if attempt == tries - 1:
                raise
            time.sleep(0.25 * (attempt + 1))
    raise InternalError("unreachable")


def _held_elsewhere(release_id: str, final: str, marker: dict[str, Any]) -> SpecError:
    renewed = dt.datetime.fromisoformat(marker["renewed_utc"])
    lapses = (renewed + dt.timedelta(seconds=LEASE_SECONDS)).isoformat(timespec="seconds")
    return SpecError(
        f"release id {release_id!r}: another attempt (process {marker['pid']} on "
        f"{marker['host']!r}) is writing {final!r}; run one attempt of a release id at a time. "
        f"If that attempt was lost, its claim lapses at {lapses} and a rerun then replaces it"
    )


def _not_ours(final: str) -> SpecError:
    return SpecError(
        f"output: {final!r} already exists and was not made by a release attempt; move it away "
        "or choose another release id"
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
    if store.exists(final) and not is_released(store, output, release_id):
        _claimable(store, release_id, final)


def _claimable(store: Store, release_id: str, final: str) -> None:
    """SpecError unless the uncommitted ``final`` may be claimed (see the module docstring)."""
    if not store.is_dir(final):
        raise _not_ours(final)
    marker = _holder(store, final)
    if marker is not None:
        raise _held_elsewhere(release_id, final, marker)


@contextmanager
def release_attempt(store: Store, output: str, release_id: str) -> Iterator[str]:
    """Claim ``<output>/<release-id>/`` for this attempt and yield it; the caller writes the
    tables there (:func:`check_claim` before each) and :func:`write_manifest` last. A directory
    left by an attempt that is gone is deleted first; one a live attempt holds is refused. On an
    error before the commit the directory is removed, unless another attempt took it over."""
    final = release_location(store, output, release_id)
    if store.exists(final):
        if is_released(store, output, release_id):
            raise InternalError("a published release must not be written again")
        _claimable(store, release_id, final)
        store.delete(final)  # a lost attempt's tables: never committed, never trusted
    store.mkdirs(final)
    token = uuid.uuid4().hex
    try:
        store.create_new(join(final, ATTEMPT), _marker(token))
    except FileExistsError:
        raise SpecError(
            f"release id {release_id!r}: another attempt is writing {final!r}; run one attempt "
            "of a release id at a time"
        ) from None
    _held[final] = token
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(store, final, token, stop), name="dprelease-lease", daemon=True
    )
    renewer.start()
    committed = False
    try:
        yield final
        committed = is_released(store, output, release_id)
        if not committed:
            raise InternalError("the manifest must be written before the commit")
    finally:
        stop.set()
        renewer.join()
        held = _held.pop(final, None) == token
        if committed:
            store.delete(join(final, ATTEMPT))
        elif held and _owns(store, final, token):
            with suppress(Exception):  # else the next attempt deletes it
                store.delete(final)


def _owns(store: Store, final: str, token: str) -> bool:
    try:
        return bool(_read_marker(store, final)["attempt"] == token)
    except (ValueError, KeyError, TypeError):
        return False


def _renew(store: Store, final: str, token: str, stop: threading.Event) -> None:
    """Renew the claim every RENEW_SECONDS until ``stop``; give it up if it is not ours."""
    while not stop.wait(RENEW_SECONDS):
        try:
            if not _owns(store, final, token):
                _held.pop(final, None)
                return
            store.replace(join(final, ATTEMPT), _marker(token))
        except Exception:  # a store that fails now fails the attempt's next write too
            continue


def check_claim(store: Store, final: str) -> None:
    """RerunError when this process's attempt in ``final`` lost its claim (it stalled past its
    lease and another attempt took the directory over): it must neither write nor commit. One
    read of the marker."""
    token = _held.get(final)
    if token is None or not _owns(store, final, token):
        _held.pop(final, None)
        raise RerunError(
            f"{final!r}: another attempt of this release took the directory over while this one "
            "stalled; this attempt stopped without publishing (the other one publishes)"
        )


def write_manifest(store: Store, final: str, manifest: dict[str, Any]) -> None:
    """The commit: the manifest as one new file in the release's directory."""
    check_claim(store, final)
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
