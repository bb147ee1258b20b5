"""Where releases are written: a local path, or any Hadoop-compatible filesystem URI.

A :class:`Store` offers the few operations the release's commit protocol needs (see
:mod:`jobs.writer`): exists, list, read, create a new file (never overwriting), delete, make
directories, and owner-only permissions where the store has them. None of them renames.

- Local paths (no scheme) use the operating system (:class:`LocalStore`), with or without Spark.
- URIs (``file://``, ``hdfs://``, ``s3a://``, ``gs://``, ``abfss://``, any scheme the cluster's
  Hadoop configuration knows) use Hadoop's FileSystem API on the driver (:class:`HadoopStore`),
  with the session's Hadoop configuration (credentials, endpoints), so the manifest goes where
  Spark writes the tables. That needs a classic session; over Spark Connect the client has no
  JVM, so only ``file://`` URIs (read as local paths the client and the server share) work.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from dp_ops.errors import SpecError
from pipelines.spark_compat import is_connect

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")


def scheme(location: str) -> str | None:
    """The URI scheme of ``location`` (``s3a``), or None for a plain local path."""
    m = _SCHEME.match(location)
    return m.group(1).lower() if m else None


def join(base: str, *names: str) -> str:
    """``base/name/...`` for a local path or a URI (no normalisation of ``base``)."""
    return "/".join([base.rstrip("/") or "/", *names]) if names else base


class Store(Protocol):
    """The filesystem operations of the commit protocol; paths are strings in the store's form."""

    kind: str
    """``local`` or ``hadoop``: what performs the operations."""

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def names(self, path: str) -> list[str]:
        """The entries' names directly under the directory ``path``."""
        ...

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist or cannot be read."""
        ...

    def create_new(self, path: str, data: bytes, private: bool = False) -> None:
        """Write a new file; FileExistsError if ``path`` exists. ``private``: owner-only."""
        ...

    def replace(self, path: str, data: bytes, private: bool = False) -> None:
        """Write ``path``, replacing what was there (not atomically: for operator reports)."""
        ...

    def delete(self, path: str) -> None:
        """Remove a file or a directory tree; nothing if absent."""
        ...

    def mkdirs(self, path: str, private: bool = False) -> None:
        """Create the directory and its parents; ``private``: owner-only (mode 700) where the
        store has permissions."""
        ...

    def make_private(self, path: str) -> None:
        """Owner-only permissions on a tree: directories 700, files 600 (nothing where the
        store has no permissions)."""
        ...

    def writable(self, path: str) -> bool:
        """Whether this process may create entries in the directory ``path`` (True where the
        store cannot tell without writing)."""
        ...


class LocalStore:
    """A local (or shared POSIX) file system, through the operating system."""

    kind = "local"

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def names(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def create_new(self, path: str, data: bytes, private: bool = False) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def replace(self, path: str, data: bytes, private: bool = False) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if private:
            os.chmod(path, 0o600)

    def delete(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)

    def mkdirs(self, path: str, private: bool = False) -> None:
        os.makedirs(path, exist_ok=True)
        if private:
            os.chmod(path, 0o700)

    def make_private(self, path: str) -> None:
        for directory, _, files in os.walk(path):
            os.chmod(directory, 0o700)
            for f in files:
                os.chmod(os.path.join(directory, f), 0o600)

    def writable(self, path: str) -> bool:
        return os.access(path, os.W_OK | os.X_OK)


class HadoopStore:
    """Any Hadoop-compatible filesystem, through the driver JVM's FileSystem API.

    Uses its own FileSystem instance (not Spark's cached one), without checksum side files, and
    closes nothing Spark shares. Permissions are set where the filesystem has them (HDFS, local,
    ABFS with hierarchical namespaces); object stores ignore them (see the README).
    """

    kind = "hadoop"

    def __init__(self, spark: Any, location: str) -> None:
        jvm = spark._jvm
        self._jvm = jvm
        self._fs_pkg = jvm.org.apache.hadoop.fs
        conf = spark._jsc.hadoopConfiguration()
        try:
            self._fs = self._fs_pkg.FileSystem.newInstance(jvm.java.net.URI(location), conf)
        except Exception as exc:  # py4j's error text names the scheme and the missing class
            raise SpecError(
                f"output.path: no Hadoop filesystem for {location.split('://')[0]}:// in this "
                "Spark (add its connector, e.g. hadoop-aws for s3a://, and its credentials to "
                f"the Spark profile): {_java_message(exc)}"
            ) from None
        self._fs.setWriteChecksum(False)
        self._fs.setVerifyChecksum(False)

    def _path(self, path: str) -> Any:
        return self._fs_pkg.Path(path)

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def is_dir(self, path: str) -> bool:
        p = self._path(path)
        return bool(self._fs.exists(p) and self._fs.getFileStatus(p).isDirectory())

    def names(self, path: str) -> list[str]:
        return sorted(str(s.getPath().getName()) for s in self._fs.listStatus(self._path(path)))

    def read(self, path: str) -> bytes | None:
        try:
            stream = self._fs.open(self._path(path))
        except Exception:
            return None
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        except Exception:
            return None
        finally:
            stream.close()

    def create_new(self, path: str, data: bytes, private: bool = False) -> None:
        p = self._path(path)
        try:
            out = self._fs.create(p, False)
        except Exception as exc:
            if "FileAlreadyExists" in _java_class(exc) or self._fs.exists(p):
                raise FileExistsError(errno.EEXIST, "exists", path) from None
            raise
        self._write(out, p, data, private)

    def replace(self, path: str, data: bytes, private: bool = False) -> None:
        p = self._path(path)
        self._write(self._fs.create(p, True), p, data, private)

    def _write(self, out: Any, p: Any, data: bytes, private: bool) -> None:
        try:
            if private:
                self._fs.setPermission(p, self._permission(0o600))
            out.write(bytearray(data))
        finally:
            out.close()  # persists the file (object stores upload here; no hflush there)

    def delete(self, path: str) -> None:
        p = self._path(path)
        if self._fs.exists(p):
            self._fs.delete(p, True)

    def mkdirs(self, path: str, private: bool = False) -> None:
        p = self._path(path)
        if not self._fs.mkdirs(p):
            raise OSError(errno.EIO, "cannot create the directory", path)
        if private:
            self._fs.setPermission(p, self._permission(0o700))

    def make_private(self, path: str) -> None:
        p = self._path(path)
        if not self._fs.exists(p):
            return
        self._fs.setPermission(p, self._permission(0o700))
        for status in self._fs.listStatus(p):
            child = str(status.getPath().toString())
            if status.isDirectory():
                self.make_private(child)
            else:
                self._fs.setPermission(status.getPath(), self._permission(0o600))

    def writable(self, path: str) -> bool:
        return True  # object stores answer only by writing; a refusal surfaces at the write

    def _permission(self, mode: int) -> Any:
        return self._fs_pkg.permission.FsPermission(f"{mode:03o}")

    def close(self) -> None:
        self._fs.close()


def _java_class(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)
    return str(java.getClass().getName()) if java is not None else type(exc).__name__


def _java_message(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)
    if java is None:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{java.getClass().getName()}: {java.getMessage()}"


def local_form(location: str) -> str | None:
    """The local path of ``location`` when it is one (a plain path or a ``file://`` URI)."""
    s = scheme(location)
    if s is None:
        return location
    if s == "file":  # file:///a and file:/a; file://host/a names another host
        rest = location[len("file:") :]
        if rest.startswith("///"):
            return rest[2:]
        return None if rest.startswith("//") else rest
    return None


def open_store(location: str, spark: Any | None) -> Store:
    """The store holding ``location``: local paths on the operating system; URIs through Hadoop
    on a classic session (``spark``); ``file://`` on the operating system when there is no
    driver JVM (Spark Connect, or before Spark starts). SpecError for a URI nothing can reach."""
    s = scheme(location)
    if s is None:
        return LocalStore()
    if spark is not None and not is_connect(spark):
        return HadoopStore(spark, location)
    if local_form(location) is not None:
        return LocalStore()
    raise SpecError(
        f"output.path: {location!r}: a {s}:// location is written through Hadoop's FileSystem "
        "API on the driver, which a Spark Connect client does not have; run the release with "
        "a classic session (--master or spark-submit), or write to a path the client and the "
        "server share"
    )


def store_path(store: Store, location: str) -> str:
    """``location`` in the form ``store`` takes (a ``file://`` URI as a local path locally)."""
    if store.kind == "local":
        local = local_form(location)
        if local is None:
            raise SpecError(f"output.path: {location!r} is not a local path")
        return local
    return location
