"""Releases on any Hadoop-compatible store, committed by the manifest, never by a rename.

The commit protocol (:mod:`jobs.writer`) runs on a local path (the operating system) and on URIs
(Hadoop's FileSystem API on the driver). The protocol's rules are checked on both; a whole
release runs through the CLI on ``norename://``, a filesystem compiled here with the JDK's
``javac`` on which rename is not available (the control shows that it is not, so a commit by
rename fails there). Killed attempts: ``tests/test_crash.py`` (local path and ``file://``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pyspark
import pytest
import yaml

from dp_ops.errors import InternalError, RerunError, SpecError
from jobs import writer
from jobs.storage import LocalStore, Store, local_form, open_store, scheme
from jobs.writer import ATTEMPT, MANIFEST
from tests.conftest import ROOT
from tests.test_jobs import DEMO, _env

JAVA = Path(__file__).parent / "java" / "NoRenameFileSystem.java"
PYSPARK_JARS = Path(pyspark.__file__).parent / "jars"
PROFILE = ROOT / "conf" / "spark" / "local.yaml"
RID = "r-2026"


@pytest.fixture(scope="module")
def norename_profile(tmp_path_factory: Any) -> Path:
    """A Spark profile whose driver knows ``norename://`` (the class compiled with javac)."""
    javac = shutil.which("javac")
    assert javac, "the JDK's javac compiles the test filesystem (install a JDK, not only a JRE)"
    work = tmp_path_factory.mktemp("norename")
    classes = work / "classes"
    cp = f"{PYSPARK_JARS}/*"
    subprocess.run([javac, "-cp", cp, "-d", str(classes), str(JAVA)], check=True)
    jar = work / "norename.jar"
    with zipfile.ZipFile(jar, "w") as z:
        for f in classes.rglob("*.class"):
            z.write(f, f.relative_to(classes).as_posix())
    conf = yaml.safe_load(PROFILE.read_text())["conf"]
    conf["spark.driver.extraClassPath"] = str(jar)
    conf["spark.hadoop.fs.norename.impl"] = "dprelease.test.NoRenameFileSystem"
    profile = work / "norename.yaml"
    profile.write_text(yaml.safe_dump({"conf": conf}))
    return profile


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_release_commits_on_a_store_without_rename(
    norename_profile: Path, demo_path: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    exe = shutil.which("dprelease", path=str(Path(sys.executable).parent))
    assert exe
    args = ["run", str(DEMO), "--input", demo_path, "--output", f"norename://{out}"]
    args += ["--release-id", RID, "--master", "local[2]", "--spark-profile", str(norename_profile)]
    done = subprocess.run([exe, *args], env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"written to norename://{out}/{RID}" in done.stdout
    release = out / RID
    manifest = json.loads((release / MANIFEST).read_text())
    assert manifest["release_id"] == RID
    names = [t["name"] for t in manifest["tables"]]
    assert {p.name for p in release.iterdir()} == {MANIFEST, *names}  # no marker, no leftovers
    for name in names:
        assert (release / name / "_SUCCESS").exists()
        assert pq.read_table(release / name).num_rows > 0
    assert _mode(out / ".private") == 0o700
    assert _mode(out / ".private" / f"{RID}.json") == 0o600
    # a rerun trusts the manifest: nothing to do, nothing rewritten
    again = subprocess.run([exe, *args], env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "already exists" in again.stdout


CONTROL = """
import sys
from pyspark.sql import SparkSession
jar, base = sys.argv[1], sys.argv[2]
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.driver.extraClassPath", jar)
         .config("spark.hadoop.fs.norename.impl", "dprelease.test.NoRenameFileSystem")
         .getOrCreate())
jvm = spark._jvm
fs = jvm.org.apache.hadoop.fs.FileSystem.get(
    jvm.java.net.URI("norename:///"), spark._jsc.hadoopConfiguration())
Path = jvm.org.apache.hadoop.fs.Path
staged, final = Path(base + "/.staging/r-1"), Path(base + "/r-1")
fs.mkdirs(staged)
fs.create(Path(base + "/.staging/r-1/manifest.json")).close()
try:
    fs.rename(staged, final)  # how a commit by rename publishes
    print("renamed")
except Exception:
    print("refused")
temporary = Path(base + "/t/_temporary/0/part-0")
fs.create(temporary).close()
print("committer", fs.rename(temporary, Path(base + "/t/part-0")))
spark.stop()
"""


def test_control_the_test_store_refuses_a_commit_by_rename(
    norename_profile: Path, tmp_path: Path
) -> None:
    jar = yaml.safe_load(norename_profile.read_text())["conf"]["spark.driver.extraClassPath"]
    script = tmp_path / "control.py"
    script.write_text(CONTROL)
    done = subprocess.run(
        [sys.executable, str(script), jar, f"norename://{tmp_path}/store"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split() == ["refused", "committer", "True"]
    assert not (tmp_path / "store" / "r-1").exists()


# --- the protocol's rules, on the operating system and through Hadoop's FileSystem API ---


@pytest.fixture(params=["local-path", "hadoop-file-uri"])
def place(request: Any, tmp_path: Path, spark: Any) -> tuple[Store, str, Path]:
    """(store, output.path, the output directory on disk)."""
    out = tmp_path / "out"
    location = str(out) if request.param == "local-path" else out.as_uri()
    store = open_store(location, spark)
    assert store.kind == ("local" if request.param == "local-path" else "hadoop")
    return store, location, out


def _manifest(rid: str) -> dict[str, Any]:
    return {"manifest_version": 1, "release_id": rid, "tables": [{"name": "t", "path": "t"}]}


def test_only_a_complete_manifest_of_this_release_commits(place: tuple[Store, str, Path]) -> None:
    store, location, out = place
    release = out / RID
    release.mkdir(parents=True)
    (release / ATTEMPT).write_text("{}")
    text = json.dumps(_manifest(RID))
    (release / MANIFEST).write_text(text[: len(text) // 2])  # cut short by a crash mid-write
    assert not writer.is_released(store, location, RID)
    (release / MANIFEST).write_text(json.dumps(_manifest("another-id")))
    assert not writer.is_released(store, location, RID)
    (release / MANIFEST).write_text(json.dumps({"release_id": RID}))  # no tables: not ours
    assert not writer.is_released(store, location, RID)
    (release / MANIFEST).write_text(text)
    assert writer.is_released(store, location, RID)
    committed = writer.read_manifest(store, location, RID)
    assert committed is not None and "spec_sha256" not in committed  # this one names no spec


def test_a_retry_deletes_a_killed_attempt_and_commits_by_its_manifest(
    place: tuple[Store, str, Path],
) -> None:
    store, location, out = place
    killed = out / RID / "t"
    killed.mkdir(parents=True)
    (out / RID / ATTEMPT).write_text("{}")
    (killed / "part-0.parquet").write_text("half a table")
    writer.check_location(store, location, RID)  # an abandoned attempt: the id is free
    with writer.release_attempt(store, location, RID) as final:
        assert not (killed / "part-0.parquet").exists()  # the killed attempt's files are gone
        assert (out / RID / ATTEMPT).exists()
        assert not writer.is_released(store, location, RID)  # tables alone commit nothing
        store.mkdirs(f"{final}/t")
        store.create_new(f"{final}/t/part-0.csv", b"a,b\n")
        writer.write_manifest(store, final, _manifest(RID))
    assert writer.is_released(store, location, RID)
    assert {p.name for p in (out / RID).iterdir()} == {MANIFEST, "t"}  # the marker is removed
    with pytest.raises(FileExistsError):  # the manifest is written once, never replaced
        store.create_new(f"{final}/{MANIFEST}", b"{}")
    with pytest.raises(RerunError, match="took the directory over"):  # by no finished attempt
        writer.write_manifest(store, final, _manifest(RID))


def test_an_attempt_that_fails_removes_its_directory(place: tuple[Store, str, Path]) -> None:
    store, location, out = place
    failing = pytest.raises(RuntimeError, match="table failed")
    with failing, writer.release_attempt(store, location, RID) as final:
        store.create_new(f"{final}/partial", b"x")
        raise RuntimeError("table failed")
    assert not (out / RID).exists()
    uncommitted = pytest.raises(InternalError, match="manifest must be written")
    with uncommitted, writer.release_attempt(store, location, RID):
        pass  # no manifest: no commit
    assert not (out / RID).exists()


@pytest.mark.parametrize(
    "foreign",
    [
        {"notes.txt": "someone's file"},
        {MANIFEST: json.dumps(_manifest("another-id"))},
        {MANIFEST: "{not json"},
    ],
    ids=["a-file", "another-release", "broken-manifest"],
)
def test_a_directory_no_attempt_made_is_never_touched(
    place: tuple[Store, str, Path], foreign: dict[str, str]
) -> None:
    store, location, out = place
    (out / RID).mkdir(parents=True)
    for name, text in foreign.items():
        (out / RID / name).write_text(text)
    with pytest.raises(SpecError, match="was not made by a release attempt"):
        writer.check_location(store, location, RID)
    refused = pytest.raises(SpecError, match="was not made by a release attempt")
    with refused, writer.release_attempt(store, location, RID):
        pass
    assert {p.name: p.read_text() for p in (out / RID).iterdir()} == foreign


def _claim(out: Path, **fields: Any) -> None:
    """A marker of an attempt that is not this test's, with ``fields`` replacing its own."""
    marker = {
        "attempt": "f" * 32,
        "host": writer._host(),
        "pid": os.getpid(),
        "pid_started": writer._process_start(os.getpid()),
        "renewed_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
    (out / RID).mkdir(parents=True, exist_ok=True)
    (out / RID / ATTEMPT).write_text(json.dumps(marker))
    (out / RID / "t").mkdir(exist_ok=True)
    (out / RID / "t" / "part-0.csv").write_text("its table")


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


LATE = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=writer.LEASE_SECONDS + 60)


@pytest.mark.parametrize(
    "holder",
    [{}, {"host": "another-host"}, {"pid_started": None}],
    ids=["running-here", "renewed-on-another-host", "running-here-no-start-time"],
)
def test_a_live_attempt_keeps_its_directory_from_a_second_attempt(
    place: tuple[Store, str, Path], holder: dict[str, Any]
) -> None:
    store, location, out = place
    _claim(out, **holder)
    with pytest.raises(SpecError, match=r"another attempt .* is writing"):
        writer.check_location(store, location, RID)
    refused = pytest.raises(SpecError, match="its claim lapses at")
    with refused, writer.release_attempt(store, location, RID):
        pass
    assert (out / RID / "t" / "part-0.csv").read_text() == "its table"  # untouched
    assert json.loads((out / RID / ATTEMPT).read_text())["attempt"] == "f" * 32


@pytest.mark.parametrize(
    "gone",
    [
        {"pid": "dead"},
        {"pid_started": "1"},  # its pid now belongs to another process
        {"host": "another-host", "renewed_utc": LATE.isoformat(timespec="seconds")},
    ],
    ids=["process-ended", "pid-reused", "lease-lapsed-on-another-host"],
)
def test_an_attempt_that_is_gone_is_replaced(
    place: tuple[Store, str, Path], gone: dict[str, Any]
) -> None:
    store, location, out = place
    if gone.get("pid") == "dead":
        gone = {**gone, "pid": _dead_pid()}
    _claim(out, **gone)
    writer.check_location(store, location, RID)
    with writer.release_attempt(store, location, RID) as final:
        assert not (out / RID / "t").exists()
        writer.write_manifest(store, final, _manifest(RID))
    assert writer.is_released(store, location, RID)


def test_an_attempt_renews_its_claim_and_one_taken_over_neither_commits_nor_deletes(
    place: tuple[Store, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, location, out = place
    monkeypatch.setattr(writer, "RENEW_SECONDS", 0.05)
    taken_over = pytest.raises(RerunError, match="took the directory over")
    with taken_over, writer.release_attempt(store, location, RID) as final:
        renewed = writer._read_marker(store, final)["renewed_utc"]
        deadline = time.monotonic() + 10
        while writer._read_marker(store, final)["renewed_utc"] == renewed:
            assert time.monotonic() < deadline, "the claim was not renewed"
            time.sleep(0.1)
        writer.check_claim(store, final)  # still ours
        monkeypatch.setattr(writer, "RENEW_SECONDS", 1000.0)  # this attempt stalls ...
        time.sleep(0.3)  # (the renewal under way ends)
        _claim(out, host="another-host")  # ... past its lease, and a second attempt takes over
        writer.write_manifest(store, final, _manifest(RID))
    assert not writer.is_released(store, location, RID)
    assert (out / RID / "t" / "part-0.csv").read_text() == "its table"  # the other's, kept
    assert json.loads((out / RID / ATTEMPT).read_text())["attempt"] == "f" * 32


def test_control_without_the_lease_check_a_second_attempt_deletes_a_live_ones_tables(
    place: tuple[Store, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, location, out = place
    _claim(out)  # live: this very process
    monkeypatch.setattr(writer, "_holder", lambda store, final: None)
    with writer.release_attempt(store, location, RID) as final:
        assert not (out / RID / "t").exists()  # the live attempt's table is gone
        writer.write_manifest(store, final, _manifest(RID))


def test_reports_and_quarantine_are_owner_only(place: tuple[Store, str, Path], spark: Any) -> None:
    store, location, out = place
    report = writer.write_report(store, location, RID, {"release_id": RID})
    assert json.loads(Path(local_form(report) or report).read_text()) == {"release_id": RID}
    rows = spark.createDataFrame([(1, "a")], "pid long, g string")
    quarantine = writer.write_quarantine(store, rows, location, RID)
    assert quarantine.endswith(f"/.private/quarantine/{RID}")
    private = out / ".private"
    assert _mode(private) == 0o700 and _mode(private / f"{RID}.json") == 0o600
    tree = private / "quarantine" / RID
    files = [p for p in tree.rglob("*") if p.is_file()]
    assert files and all(_mode(p) == 0o600 for p in files)
    assert all(_mode(p) == 0o700 for p in [tree, *(p for p in tree.rglob("*") if p.is_dir())])
    assert spark.read.parquet(quarantine).count() == 1


@pytest.mark.parametrize(
    ("location", "expected_scheme", "local"),
    [
        ("/data/out", None, "/data/out"),
        ("relative/out", None, "relative/out"),
        ("file:///data/out", "file", "/data/out"),
        ("file:/data/out", "file", "/data/out"),
        ("file://otherhost/data/out", "file", None),
        ("s3a://bucket/releases", "s3a", None),
        ("abfss://c@account.dfs.core.windows.net/r", "abfss", None),
        ("hdfs://nn:8020/releases", "hdfs", None),
    ],
)
def test_locations_are_told_apart(location: str, expected_scheme: str | None, local: Any) -> None:
    assert scheme(location) == expected_scheme
    assert local_form(location) == local


def test_without_a_driver_jvm_only_shared_paths_are_reachable() -> None:
    assert isinstance(open_store("file:///data/out", None), LocalStore)
    with pytest.raises(SpecError, match="classic session"):
        open_store("s3a://bucket/releases", None)


def test_a_scheme_the_cluster_does_not_know_is_a_spec_error(spark: Any) -> None:
    with pytest.raises(SpecError, match=r"no Hadoop filesystem for nosuchfs://.*Spark profile"):
        open_store("nosuchfs://bucket/releases", spark)


@pytest.mark.parametrize("output", ["out/demo", "out", "./a/b/c"])
def test_a_relative_output_path_that_does_not_exist_yet_is_checked_and_written(
    output: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(output, None)
    writer.check_location(store, output, RID)  # its nearest existing parent: the working dir
    with writer.release_attempt(store, output, RID) as final:
        writer.write_manifest(store, final, _manifest(RID))
    assert writer.is_released(store, output, RID)
    assert (tmp_path / output / RID / MANIFEST).exists()
    assert writer.location_name(output, RID) == str(tmp_path / output / RID).replace("/./", "/")


def test_an_output_under_a_read_only_parent_is_refused_before_writing(
    tmp_path: Path, monkeypatch: Any
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(LocalStore, "writable", lambda self, path: path != str(locked))
    with pytest.raises(SpecError, match=r"nearest existing parent.*is not writable"):
        writer.check_location(LocalStore(), str(locked / "new" / "out"), RID)
    assert not (locked / "new").exists()
