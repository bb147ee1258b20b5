"""SparkSession for the jobs, configured from a Spark profile in ``conf/spark/``.

A classic session (``--master``, spark-submit's, ``DPRELEASE_MASTER``, default ``local[*]``) or a
Spark Connect session (``--remote sc://host:port`` or ``SPARK_REMOTE``). A Connect session takes
only the profile's ``spark.sql.*`` settings (the others are the server's); Spark's log level and
scratch files are the server's too.

A session this module starts in local mode keeps Spark's scratch files (shuffle files hold
per-person rows) in an owner-only directory of its own, removed by :func:`close_session` at the
end of the run, failed or not; one left by a killed process is removed by the next run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import SparkSession

from dp_ops.errors import SpecError
from jobs import spark_logs

log = logging.getLogger("dprelease")
SCRATCH_PREFIX = "dprelease-spark-"
"""Scratch directories are ``<tmp>/dprelease-spark-<pid>-<random>`` (mode 700)."""
_MASTER = re.compile(
    r"local(\[(\*|\d+)(,\d+)?\])?"
    r"|local-cluster\[\d+, *\d+, *\d+\]"
    r"|spark://[^\s/,]+(,[^\s/,]+)*"
    r"|yarn"
    r"|k8s://\S+"
    r"|mesos://\S+"
)
_REMOTE = re.compile(r"sc://[A-Za-z0-9._\-\[\]:]+(/(;[^\s;=/]+=[^\s;]*)*)?")
"""A Spark Connect URL: ``sc://host[:port][/;param=value...]``."""
_scratch: dict[int, Path] = {}
"""The scratch directory of the session this process started, by session id."""
_started: set[int] = set()
"""Sessions this module started (stopped by :func:`close_session`), by id."""

DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # PySpark otherwise records the Python call site of every DataFrame function it is handed:
    # several JVM round trips each, about a third of the time a release spends building its plan
    "spark.python.sql.dataFrameDebugging.enabled": "false",
    # A release keeps a few computed frames (pipelines.persistence); by default adaptive execution
    # leaves a kept plan's shuffles at spark.sql.shuffle.partitions (200), and every later step
    # reads them in 200 tasks: level tables took three times as long without a profile
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
    # coalesce shuffles by size (spark.sql.adaptive.advisoryPartitionSizeInBytes), not down to the
    # default parallelism only: after bounding, a release's shuffles are output-sized
    "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
}


def load_profile(path: str | Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        doc: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"spark profile: cannot read {str(path)!r}: {exc.strerror}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conf", {}), dict):
        raise SpecError(f"spark profile {str(path)!r}: expected a mapping with a 'conf' mapping")
    return {str(k): str(v) for k, v in (doc.get("conf") or {}).items()}


def _under_spark_submit() -> bool:
    """spark-submit starts Python with a gateway to its JVM; its --master must then win."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or bool(os.environ.get("SPARK_ENV_LOADED"))


def local_cores(master: str) -> int | None:
    """The cores of a ``local``, ``local[N]``, ``local[*]`` or ``local[N,F]`` master; else None."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if m is None:
        return None
    if m.group(1) is None:
        return 1
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))


def session_conf(master: str | None, profile: dict[str, str]) -> dict[str, str]:
    """The settings of a new session: the defaults, then the profile's, which win.

    In local mode without a profile setting, shuffles get two partitions per core instead of
    Spark's 200, which suit a cluster: after bounding a release's shuffles are small, and on a
    laptop most of 200 tasks would only add scheduling.
    """
    conf = dict(DEFAULTS)
    cores = local_cores(master) if master else None
    if cores is not None:
        conf["spark.sql.shuffle.partitions"] = str(2 * cores)
    return {**conf, **profile}


def check_master(master: str, where: str = "--master") -> str:
    """``master`` if it is a Spark master URL this version runs on; SpecError (exit 2) if not.
    A Spark Connect URL is not a master: it is refused with a pointer to ``--remote``."""
    text = master.strip()
    if text.startswith("sc://"):
        raise SpecError(
            f"{where}: sc://... is a Spark Connect URL, not a master; give it as --remote (or "
            "SPARK_REMOTE) instead"
        )
    if not _MASTER.fullmatch(text):
        raise SpecError(
            f"{where}: {text[:80]!r} is not a Spark master URL; use local[N], local[*], "
            "spark://host:port, yarn or k8s://https://host:port"
        )
    return text


def check_remote(remote: str, where: str = "--remote") -> str:
    """``remote`` if it is a Spark Connect URL; SpecError (exit 2) if not. The URL is not quoted
    back: its parameters may hold a token."""
    text = remote.strip()
    if not _REMOTE.fullmatch(text):
        raise SpecError(
            f"{where}: not a Spark Connect URL; use sc://host:port, optionally followed by "
            "/;param=value (e.g. sc://localhost:15002/;use_ssl=true)"
        )
    return text


def connect_conf(conf: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The settings a Connect client can give its session (``spark.sql.*``, set per session on
    the server), and the names of the others, which are the server's to set."""
    kept = {k: v for k, v in conf.items() if k.startswith("spark.sql.")}
    return kept, sorted(k for k in conf if k not in kept)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_scratch(base: Path) -> None:
    """Remove scratch directories of this user whose process is gone (killed runs)."""
    for path in base.glob(f"{SCRATCH_PREFIX}*"):
        pid_text = path.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        try:
            owned = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if owned and pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)


def _new_scratch() -> Path:
    base = Path(tempfile.gettempdir())
    _remove_stale_scratch(base)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=base))


def _submitted_remote() -> str | None:
    """The Connect URL of ``spark-submit --remote`` (which hands it to Python in the
    ``PYSPARK_REMOTE_INIT_CONF_*`` variables), or None."""
    for i in range(int(os.environ.get("PYSPARK_REMOTE_INIT_CONF_LEN", "0") or 0)):
        try:
            conf = json.loads(os.environ.get(f"PYSPARK_REMOTE_INIT_CONF_{i}", ""))
        except ValueError:
            continue
        if isinstance(conf, dict) and conf.get("spark.remote"):
            return str(conf["spark.remote"])
    return None


def _effective_master(master: str | None) -> str | None:
    if master:
        return master
    if _under_spark_submit():  # spark-submit's --master, from the JVM's properties
        from pyspark import SparkConf

        value: str | None = SparkConf().get("spark.master", None)
        return value
    return None


def get_session(
    master: str | None = None,
    profile: str | Path | None = None,
    app: str = "dprelease",
    remote: str | None = None,
) -> SparkSession:
    """The active session (under spark-submit), a new classic one with the profile's settings,
    or a Spark Connect session (``remote``, spark-submit's ``--remote``, else ``SPARK_REMOTE``).

    SpecError (exit 2) for a master URL that is not one, a Connect URL that is not one, both a
    master and a remote, or a ``DPRELEASE_SPARK_LOG_LEVEL`` that is not a log level; these are
    checked before Spark starts.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark_logs.requested_level()
    if master:
        master = check_master(master)
    submitted = _submitted_remote() if _under_spark_submit() else None
    if remote is None and submitted is not None:  # spark-submit's --remote wins, as its --master
        remote = check_remote(submitted, "spark-submit --remote")
    elif remote is None and os.environ.get("SPARK_REMOTE") and not _under_spark_submit():
        remote = os.environ["SPARK_REMOTE"]
        if master:
            raise SpecError("--master and SPARK_REMOTE both given; unset one of them")
        remote = check_remote(remote, "SPARK_REMOTE")
    elif remote is not None:
        if master:
            raise SpecError("--master and --remote both given; give one of them")
        remote = check_remote(remote)
    if remote is not None:
        return _connect_session(remote, load_profile(profile), app)
    return _classic_session(master, load_profile(profile), app)


def _connect_session(remote: str, profile: dict[str, str], app: str) -> SparkSession:
    try:
        import pyspark.sql.connect.session  # noqa: F401  (grpc and the Connect client)
    except ImportError as exc:
        raise SpecError(
            "--remote needs the Spark Connect client and pyspark 4: pip install "
            "'dprelease[connect]'"
        ) from exc
    conf, server_side = connect_conf(session_conf(None, profile))
    if server_side:
        log.debug("spark connect: settings left to the server: %s", ", ".join(server_side))
    builder = SparkSession.builder.remote(remote).appName(app)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.create()
    _started.add(id(spark))
    return spark


def _classic_session(master: str | None, profile: dict[str, str], app: str) -> SparkSession:
    from pyspark import SparkContext

    builder = SparkSession.builder.appName(app)
    if not master and not _under_spark_submit():
        master = check_master(os.environ.get("DPRELEASE_MASTER", "local[*]"), "DPRELEASE_MASTER")
    if master:
        builder = builder.master(master)
    conf = session_conf(master, profile)
    scratch = None
    starts = SparkContext._active_spark_context is None
    effective = _effective_master(master)
    local = effective is not None and local_cores(effective) is not None
    if (
        starts
        and local
        and "spark.local.dir" not in conf
        and not os.environ.get("SPARK_LOCAL_DIRS")
    ):
        scratch = _new_scratch()
        conf["spark.local.dir"] = str(scratch)
        log.debug("spark: scratch files in %s (owner-only, removed at the end)", scratch)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if scratch is not None:
        _scratch[id(spark)] = scratch
    if starts:
        _started.add(id(spark))
    spark_logs.apply(spark)
    return spark


def close_session(spark: SparkSession | None) -> None:
    """Stop ``spark`` and remove its scratch directory, if this module started it (a session
    handed in by the caller, a notebook's or a test's, is left running). A Connect session this
    module started is closed; its server goes on."""
    if spark is None or id(spark) not in _started:
        return
    _started.discard(id(spark))
    scratch = _scratch.pop(id(spark), None)
    try:
        spark.stop()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
