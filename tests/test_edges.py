"""The bad-input battery: malformed specs, inputs, runtime settings, ledger and release-id abuse.

Every case runs ``dprelease run`` (in this process, on the test session) against a ledger with
room to spare and asserts: the exit code of the README's table, a message naming the key,
column or setting, no data value in any output stream, nothing published, and no ledger charge.
A control case checks that the same harness sees a charge and a publication when they happen.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from jobs.cli import main
from jobs.ledger import Budget, Ledger
from jobs.writer import ATTEMPT
from tests.conftest import base_spec

MARKER = "QZX_DATA_MARKER"
VALUE = 7.4375  # a value of the data; it must not appear in any message
ROWS = [(1, "a", 1.0, MARKER), (2, "b", 2.5, MARKER), (3, "c", VALUE, MARKER)]
SCHEMA = "pid long, g string, v double, note string"
RID = "r1"


@dataclass
class Run:
    """One prepared run: its spec document, command-line arguments, files and environment."""

    tmp: Path
    doc: dict[str, Any]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    release_id: str = RID
    spec_text: bytes | None = None
    """The spec file's bytes, when a case writes them itself instead of ``doc``."""

    @property
    def data(self) -> Path:
        return self.tmp / "in"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.sqlite"

    def write_csv(self, text: bytes, name: str = "in.csv") -> None:
        self.data.mkdir(exist_ok=True)
        (self.data / name).write_bytes(text)
        self.doc["input"]["format"] = "csv"


def prepare(tmp: Path, spark: Any) -> Run:
    run = Run(tmp, copy.deepcopy(base_spec()))
    spark.createDataFrame(ROWS, SCHEMA).write.parquet(str(run.data))
    run.doc["input"]["path"] = str(run.data)
    run.doc["output"]["path"] = str(run.out)
    run.doc["ledger"] = {"dataset": "persons", "path": str(run.ledger)}
    Ledger(run.ledger).init("persons", Budget(Fraction(10), Fraction(1, 1000)))
    return run


def execute(run: Run, monkeypatch: Any) -> int:
    spec = run.tmp / "spec.yaml"
    if run.spec_text is not None:
        spec.write_bytes(run.spec_text)
    else:
        spec.write_text(yaml.safe_dump(run.doc))
    for key, value in run.env.items():
        monkeypatch.setenv(key, value)
    args = ["run", str(spec), *run.args]
    if run.release_id is not None and "--release-id" not in args:
        args += ["--release-id", run.release_id]
    return main(args)


def spent(run: Run) -> Fraction:
    return Ledger(run.ledger).account("persons").spent.epsilon


def table(change: Callable[[dict[str, Any]], None]) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        change(run.doc["tables"][0])

    return apply


def budget(**values: Any) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        run.doc["budget"] = values

    return apply


def args(*extra: str) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        run.args += list(extra)

    return apply


def release_id(value: str) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        run.release_id = value

    return apply


def env(**values: str) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        run.env.update(values)

    return apply


def _remote_and_master(run: Run) -> None:
    run.env["SPARK_REMOTE"] = "sc://host:15002"
    run.args += ["--master", "local[1]"]


def input_rows(rows: list[Any], schema: str) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        import shutil

        from pyspark.sql import SparkSession

        shutil.rmtree(run.data)
        spark = SparkSession.getActiveSession()
        assert spark is not None
        spark.createDataFrame(rows, schema).write.parquet(str(run.data))

    return apply


def csv(text: bytes, **input_keys: Any) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        import shutil

        shutil.rmtree(run.data)
        run.write_csv(text)
        run.doc["input"].update(input_keys)

    return apply


def output_entry(make: Callable[[Path], None]) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        make(run.out)

    return apply


def _file(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _output_under_a_file(run: Run) -> None:
    _file(run.tmp / "f")
    run.doc["output"]["path"] = str(run.tmp / "f" / "out")


def _spec_text(text: bytes) -> Callable[[Run], None]:
    def apply(run: Run) -> None:
        run.spec_text = text

    return apply


def _corrupt_second_file(run: Run) -> None:
    """A good Parquet part and a text file named like one: Spark reads the schema from the first
    and fails on the second in a task, with the file's last bytes in its message."""
    (run.data / "part-zzzz.parquet").write_text(f"4,{MARKER},{VALUE}\n")


def _pandas_empty(run: Run) -> None:
    import shutil

    shutil.rmtree(run.data)
    run.data.mkdir()
    frame = pd.DataFrame({"pid": [], "g": [], "v": []})  # no rows: pandas types them as null
    frame["pid"] = frame["pid"].astype("object")
    frame["g"] = frame["g"].astype("object")
    frame["v"] = frame["v"].astype("object")
    frame.to_parquet(run.data / "part-0.parquet")


def _parquet_as_csv(run: Run) -> None:
    run.doc["input"]["format"] = "csv"


def _csv_as_parquet(run: Run) -> None:
    import shutil

    shutil.rmtree(run.data)
    run.data.mkdir()
    (run.data / "part-0.parquet").write_text(f"pid,g,v\n1,a,{VALUE}\n3,{MARKER},2\n")


def _garbage_parquet(run: Run) -> None:
    import shutil

    shutil.rmtree(run.data)
    run.data.mkdir()
    (run.data / "part-0.parquet").write_bytes(MARKER.encode() * 40 + b"PAR1")


SPEC, INPUT, REFUSED = 2, 3, 4
EXTRA = f"pid,g,v\n1,a,1.0\n2,b,2.0,{MARKER}\n3,c,{VALUE}\n".encode()
BAD_UTF8 = b"pid,g,v\n1,a,1.0\n2,b\xff\xfe,2.0\n3,c," + str(VALUE).encode() + b"\n"
CASES: list[tuple[str, Callable[[Run], None], int, str]] = [
    # the spec: exit 2, naming the key
    ("binary-spec", _spec_text(b"\x00\xff\xfe\x89PNG" * 10), SPEC, "is not UTF-8 text"),
    ("yaml-list", _spec_text(b"- a\n- b\n"), SPEC, "must hold a mapping"),
    ("bad-yaml", _spec_text(b"input: [unclosed\n"), SPEC, "is not valid YAML"),
    ("epsilon-1e-300", budget(epsilon="1e-300"), SPEC, "budget.epsilon: 1e-300 is below 1e-12"),
    ("epsilon-word", budget(epsilon="lots"), SPEC, "budget.epsilon: must be a number"),
    ("epsilon-bool", budget(epsilon=True), SPEC, "budget.epsilon: must be a number"),
    ("epsilon-negative", budget(epsilon=-1), SPEC, "budget.epsilon: must be > 0"),
    ("epsilon-zero", budget(epsilon=0), SPEC, "budget.epsilon: must be > 0"),
    ("delta-above-1", budget(epsilon=1, delta=1.5), SPEC, "budget.delta: must lie in [0, 1)"),
    ("delta-tiny", budget(epsilon=1, delta="1e-200"), SPEC, "budget.delta: must be 0 or at least"),
    ("epsilon-and-rho", budget(epsilon=1, rho=1), SPEC, "budget: state the budget as epsilon"),
    ("rho-zero", budget(rho=0), SPEC, "budget.rho: must be > 0"),
    ("unknown-key", lambda r: r.doc.update(extra=1), SPEC, "extra: unknown key"),
    ("unknown-table-key", table(lambda t: t.update(colour=1)), SPEC, "tables[0].colour"),
    ("unknown-metric", table(lambda t: t.update(metrics=["median"])), SPEC, "metrics[0]"),
    (
        "sum-bounds-reversed",
        table(lambda t: t.update(metrics=[{"sum": "v", "lower": 3, "upper": 1}])),
        SPEC,
        "tables[0].metrics[0].lower: must be below upper",
    ),
    (
        "l0-zero",
        table(lambda t: t["bounds"].update(max_partitions=0)),
        SPEC,
        "tables[0].bounds.max_partitions",
    ),
    (
        "noise-beyond-64-bits",
        table(lambda t: t["bounds"].update(max_partitions=10**9, max_rows_per_partition=10**9)),
        SPEC,
        "tables[0] (t): the bounds and budget ask for",
    ),
    (
        "private-without-delta",
        lambda r: (
            r.doc.update(budget={"epsilon": 1}),
            r.doc["tables"][0].update(partitions={"type": "private"}),
        ),
        SPEC,
        "private selection needs budget.delta > 0",
    ),
    (
        "gaussian-without-delta",
        lambda r: r.doc.update(budget={"epsilon": 1}, noise="gaussian"),
        SPEC,
        "gaussian noise needs budget.delta > 0",
    ),
    ("table-name-path", table(lambda t: t.update(name="../x")), SPEC, "tables[0].name"),
    (
        "warning-multiple-zero",
        lambda r: r.doc["output"].update(noise_warning_multiple=0),
        SPEC,
        "output.noise_warning_multiple: must be > 0",
    ),
    (
        "domain-value-of-wrong-type",
        lambda r: (
            r.doc.update(domains={"g": ["a"]}),
            input_rows([(1, 5, 1.0)], "pid long, g long, v double")(r),
        ),
        SPEC,
        "domains.g: 'a' is not a valid bigint key",
    ),
    ("ledger-url", lambda r: r.doc["ledger"].update(path="postgresql://db/l"), SPEC, "ledger.path"),
    (
        "ledger-flag-no-section",
        lambda r: (r.doc.pop("ledger"), args("--ledger", "x")(r)),
        SPEC,
        "--ledger needs",
    ),
    ("missing-spec-file", args("--config", "/nonexistent/spec.yaml"), SPEC, "spec: cannot read"),
    # release ids: exit 2 before anything else
    ("id-parent", release_id("../escape"), SPEC, "--release-id: a release id is"),
    ("id-slash", release_id("a/b"), SPEC, "--release-id: a release id is"),
    ("id-hidden", release_id(".private"), SPEC, "--release-id: a release id is"),
    ("id-dots", release_id("a..b"), SPEC, "--release-id: a release id is"),
    ("id-empty", release_id(""), SPEC, "--release-id: a release id is"),
    ("id-space", release_id("2026 11"), SPEC, "--release-id: a release id is"),
    ("id-too-long", release_id("a" * 129), SPEC, "--release-id: a release id is"),
    ("id-newline", release_id("a\nb"), SPEC, "--release-id: a release id is"),
    # runtime settings: exit 2 before Spark starts
    ("master-bogus", args("--master", "bogus://x"), SPEC, "is not a Spark master URL"),
    ("validator-unknown", lambda r: r.doc["input"].update(validator="pandas"), SPEC, "validator"),
    ("master-connect", args("--master", "sc://host:15002"), SPEC, "give it as --remote"),
    ("remote-bogus", args("--remote", "http://host:15002"), SPEC, "--remote: not a Spark Connect"),
    ("remote-space", args("--remote", "sc://host:1/;token=a b"), SPEC, "--remote: not a Spark"),
    ("remote-and-master", args("--remote", "sc://h:1", "--master", "local[1]"), SPEC, "both given"),
    ("spark-remote-bogus", env(SPARK_REMOTE="sc://h o"), SPEC, "SPARK_REMOTE: not a Spark Connect"),
    ("spark-remote-and-master", _remote_and_master, SPEC, "--master and SPARK_REMOTE both given"),
    ("log-level", env(DPRELEASE_SPARK_LOG_LEVEL="LOUD"), SPEC, "DPRELEASE_SPARK_LOG_LEVEL"),
    ("profile-missing", args("--spark-profile", "/nonexistent.yaml"), SPEC, "spark profile"),
    # the output location: exit 2 before any charge
    ("output-is-file", output_entry(lambda o: _file(o)), SPEC, "is not a directory"),
    ("output-parent-file", _output_under_a_file, SPEC, "is not a directory"),
    ("id-dir-taken", output_entry(lambda o: _file(o / RID / "x")), SPEC, "already exists"),
    ("id-is-file", output_entry(lambda o: _file(o / RID)), SPEC, "already exists"),
    ("private-is-file", output_entry(lambda o: _file(o / ".private")), SPEC, "must be a directory"),
    (  # a manifest of another release, without the attempt marker: someone else's directory
        "id-dir-foreign-manifest",
        output_entry(
            lambda o: _file(o / RID / "manifest.json", '{"release_id": "x", "tables": []}')
        ),
        SPEC,
        "already exists",
    ),
    # the input: exit 3, naming the column, quoting nothing read from it
    (
        "value-missing",
        input_rows([(1, "a", MARKER)], "pid long, g string, note string"),
        INPUT,
        "value column 'v' is missing",
    ),
    (
        "value-text",
        input_rows([(1, "a", MARKER)], "pid long, g string, v string"),
        INPUT,
        "value column 'v' must be numeric",
    ),
    (
        "unit-null",
        input_rows([(None, "a", VALUE)], "pid long, g string, v double"),
        INPUT,
        "'pid not null (privacy unit)'",
    ),
    (
        "value-nan",
        input_rows([(1, "a", float("nan"))], "pid long, g string, v double"),
        INPUT,
        "'v finite (no NaN or infinity)'",
    ),
    (
        "value-inf",
        input_rows([(1, "a", float("-inf"))], "pid long, g string, v double"),
        INPUT,
        "'v finite (no NaN or infinity)'",
    ),
    (
        "dimension-null",
        input_rows([(1, None, VALUE)], "pid long, g string, v double"),
        INPUT,
        "'g not null (dimension)'",
    ),
    (
        "dimension-outside-domain",
        input_rows([(1, MARKER, VALUE)], "pid long, g string, v double"),
        INPUT,
        "'g in its declared domain'",
    ),
    ("no-rows", input_rows([], "pid long, g string, v double"), INPUT, "input: no rows"),
    (
        "dimension-of-map-type",
        input_rows([(1, {"k": 1}, VALUE)], "pid long, g map<string,int>, v double"),
        INPUT,
        "dimension column 'g' has type map",
    ),
    (
        "input-missing",
        lambda r: r.doc["input"].update(path="/nonexistent/x"),
        INPUT,
        "does not exist",
    ),
    (
        "csv-without-header-row",
        csv(f"1,a,{VALUE},{MARKER}\n2,b,1.0,{MARKER}\n".encode()),
        INPUT,
        "privacy unit column 'pid' is missing",
    ),
    ("parquet-read-as-csv", _parquet_as_csv, INPUT, "is missing"),
    ("csv-named-parquet", _csv_as_parquet, INPUT, "cannot be read as parquet"),
    ("garbage-parquet", _garbage_parquet, INPUT, "cannot be read as parquet"),
    ("pandas-empty-parquet", _pandas_empty, INPUT, "input: no rows"),
    ("corrupt-file-among-good", _corrupt_second_file, INPUT, "cannot be read as its format"),
    ("csv-header-only", csv(b"pid,g,v\n"), INPUT, "input: no rows"),
    ("csv-empty-file", csv(b""), INPUT, ""),
    ("csv-extra-field", csv(EXTRA), INPUT, "'well-formed CSV record (field count)'"),
    ("csv-short-row", csv(b"pid,g,v\n1,a,1.0\n2,b\n"), INPUT, "'well-formed CSV record"),
    ("csv-bad-utf8", csv(BAD_UTF8), INPUT, "'g valid UTF-8 text'"),
    (
        "expectation-on-missing-column",
        lambda r: r.doc["input"].update(expectations=[{"column": "age", "not_null": True}]),
        INPUT,
        "input.expectations[0]: column 'age' is missing",
    ),
]


@pytest.mark.parametrize(
    ("change", "code", "match"),
    [pytest.param(c, code, m, id=name) for name, c, code, m in CASES],
)
def test_bad_input_fails_cleanly(
    tmp_path: Path,
    spark: Any,
    capsys: Any,
    monkeypatch: Any,
    change: Callable[[Run], None],
    code: int,
    match: str,
) -> None:
    run = prepare(tmp_path, spark)
    change(run)
    exit_code = execute(run, monkeypatch)
    captured = capsys.readouterr()
    streams = captured.out + captured.err
    assert exit_code == code, streams
    assert match in captured.err, captured.err
    assert MARKER not in streams and str(VALUE) not in streams and "7.44" not in streams
    manifest = run.out / RID / "manifest.json"  # (another release's may have been there)
    assert not manifest.exists() or f'"{RID}"' not in manifest.read_text()
    assert not (run.out / RID / ATTEMPT).exists()  # nothing published, no attempt left behind
    assert spent(run) == 0  # no ledger charge
    assert sum(1 for _ in run.tmp.parent.glob("escape*")) == 0  # nothing outside the output


@pytest.mark.parametrize(
    ("change", "match"),
    [pytest.param(c, m, id=name) for name, c, code, m in CASES if code == INPUT],
)
def test_bad_input_fails_cleanly_with_the_spark_validator(
    tmp_path: Path,
    spark: Any,
    capsys: Any,
    monkeypatch: Any,
    change: Callable[[Run], None],
    match: str,
) -> None:
    """The input cases again, with ``input.validator: spark``: the same exit and message,
    nothing published, nothing charged."""
    run = prepare(tmp_path, spark)
    change(run)
    run.doc["input"]["validator"] = "spark"
    exit_code = execute(run, monkeypatch)
    captured = capsys.readouterr()
    streams = captured.out + captured.err
    assert exit_code == INPUT, streams
    assert match in captured.err, captured.err
    assert MARKER not in streams and str(VALUE) not in streams and "7.44" not in streams
    assert not (run.out / RID / "manifest.json").exists()
    assert spent(run) == 0


def test_the_harness_sees_a_charge_and_a_publication(
    tmp_path: Path, spark: Any, capsys: Any, monkeypatch: Any
) -> None:
    """Control: a good run through the same harness is published and charged, and the budget's
    decimals are charged exactly."""
    run = prepare(tmp_path, spark)
    run.doc["budget"] = {"epsilon": 0.1, "delta": 1e-6}
    assert execute(run, monkeypatch) == 0, capsys.readouterr().err
    assert (run.out / RID / "manifest.json").exists()
    assert spent(run) == Fraction(1, 10)


def test_malformed_csv_rows_are_quarantined_with_nothing_lost(
    tmp_path: Path, spark: Any, capsys: Any, monkeypatch: Any
) -> None:
    run = prepare(tmp_path, spark)
    csv(EXTRA + b"4,b\xff,1.0\n5,a,2.0\n", on_invalid="quarantine")(run)
    assert execute(run, monkeypatch) == 0, capsys.readouterr().err
    streams = "".join(capsys.readouterr())
    assert MARKER not in streams
    quarantine = pd.read_parquet(run.out / ".private" / "quarantine" / RID)
    assert sorted(quarantine["pid"]) == [2, 4]  # the row with an extra field, the bad bytes
    released = pd.read_parquet(run.out / RID / "t")
    assert "_dprelease_csv_malformed" not in released.columns
    assert len(released) == 3  # the public keys a, b, c
    assert os.stat(run.out / ".private").st_mode & 0o077 == 0


# ---------------------------------------------------------------------------------------------
# The ledger binds a release id to its spec, amount and location (every path: CLI, API)


def _crashed_attempt(run: Run) -> None:
    """The ledger state a crash after the charge leaves: charged under RID, never committed."""
    from jobs.config import load_spec, spec_hash
    from jobs.ledger import Attempt
    from pipelines.plan import plan_release

    spec_file = run.tmp / "first.yaml"
    spec_file.write_text(yaml.safe_dump(run.doc))
    spec = load_spec(spec_file)
    attempt = Attempt(RID, spec_hash(spec), str((run.out / RID).absolute()))
    Ledger(run.ledger).charge("persons", attempt, plan_release(spec).cost)


def test_a_crashed_attempt_is_retried_uncharged_only_with_its_own_spec(
    tmp_path: Path, spark: Any, capsys: Any, monkeypatch: Any
) -> None:
    run = prepare(tmp_path, spark)
    _crashed_attempt(run)
    assert spent(run) == 1
    run.doc["budget"] = {"epsilon": 10, "delta": 1e-6}  # the same id, a larger budget
    assert execute(run, monkeypatch) == REFUSED
    err = capsys.readouterr().err
    assert "bound to the spec of its first charge" in err
    assert not (run.out / RID).exists() and spent(run) == 1
    run.doc["budget"] = base_spec()["budget"]  # the identical spec: completed, not charged again
    assert execute(run, monkeypatch) == 0, capsys.readouterr().err
    assert (run.out / RID / "manifest.json").exists() and spent(run) == 1
    (release,) = Ledger(run.ledger).account("persons").releases
    assert release[0] == RID


def test_a_published_release_id_is_a_no_op_where_it_is_and_refused_elsewhere(
    tmp_path: Path, spark: Any, capsys: Any, monkeypatch: Any
) -> None:
    from jobs.api import release_dataframes

    run = prepare(tmp_path, spark)
    assert execute(run, monkeypatch) == 0
    manifest = (run.out / RID / "manifest.json").read_bytes()
    capsys.readouterr()
    assert execute(run, monkeypatch) == 0  # the same place: nothing done, nothing charged
    assert "already exists" in capsys.readouterr().out
    assert (run.out / RID / "manifest.json").read_bytes() == manifest and spent(run) == 1
    elsewhere = tmp_path / "elsewhere"
    run.args = ["--output", str(elsewhere)]  # a second, fresh draw under the same id: refused
    assert execute(run, monkeypatch) == REFUSED
    assert "bound to the spec" in capsys.readouterr().err
    assert not (elsewhere / RID).exists() and spent(run) == 1
    run.args = []
    run.doc["budget"] = {"epsilon": 5, "delta": 1e-6}  # the same place, another spec
    assert execute(run, monkeypatch) == REFUSED
    assert "from another spec" in capsys.readouterr().err
    run.doc["budget"] = base_spec()["budget"]
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(run.doc))
    with pytest.raises(Exception, match="'r1' of dataset 'persons' was published at"):
        release_dataframes(str(spec_file), spark, release_id=RID)  # the API: the same rules
    shutil.rmtree(run.out / RID)  # the release removed: no second draw either
    assert execute(run, monkeypatch) == REFUSED
    assert "holds no manifest now" in capsys.readouterr().err
    assert spent(run) == 1


def test_without_a_ledger_a_published_id_refuses_another_spec(
    tmp_path: Path, spark: Any, capsys: Any, monkeypatch: Any
) -> None:
    run = prepare(tmp_path, spark)
    run.doc.pop("ledger")
    assert execute(run, monkeypatch) == 0
    run.doc["budget"] = {"epsilon": 50, "delta": 1e-6}
    assert execute(run, monkeypatch) == REFUSED
    assert "is published at" in capsys.readouterr().err
    assert (run.out / RID / "manifest.json").exists()


def test_decimal_budgets_add_up_exactly_from_specs_and_the_command_line(tmp_path: Path) -> None:
    from jobs.ledger import Attempt
    from pipelines.plan import plan_release
    from pipelines.spec import parse_spec

    path = str(tmp_path / "l.sqlite")
    assert main(["budget", "init", "d", "--epsilon", "0.3", "--ledger", path]) == 0
    assert main(["budget", "init", "e", "--epsilon", "1", "--ledger", path]) == 0
    ledger = Ledger(path)

    def cost(epsilon: Any) -> Any:
        return plan_release(parse_spec(base_spec(budget={"epsilon": epsilon}))).cost

    ledger.charge("d", Attempt("a", "h", "/x/a"), cost(0.1))
    ledger.charge("d", Attempt("b", "h", "/x/b"), cost(0.2))  # 0.1 + 0.2 fits 0.3 exactly
    assert ledger.account("d").remaining.epsilon == 0
    assert main(["budget", "init", "f", "--epsilon", "0.3", "--ledger", path]) == 0
    for i in range(3):  # three releases of 0.1 fit a lifetime of 0.3
        ledger.charge("f", Attempt(f"t{i}", "h", f"/x/t{i}"), cost(0.1))
    assert ledger.account("f").remaining.epsilon == 0
    for i in range(10):  # ten releases of 0.1 fit a lifetime of 1
        ledger.charge("e", Attempt(f"r{i}", "h", f"/x/r{i}"), cost("0.1"))
    assert ledger.account("e").remaining.epsilon == 0
    with pytest.raises(Exception, match="remaining epsilon 0"):
        ledger.charge("e", Attempt("r10", "h", "/x/r10"), cost("1e-6"))
    # control: the binary double of 0.1 is not 1/10, and would not have fitted
    assert Fraction(0.1) + Fraction(0.2) > Fraction(3, 10)


def test_the_plan_warns_of_meaningless_noise_and_unreachable_bounds(caplog: Any) -> None:
    from pipelines.plan import plan_release, plan_warnings
    from pipelines.spec import parse_spec

    doc = base_spec()
    doc["tables"][0]["metrics"] = ["count"]
    assert plan_warnings(plan_release(parse_spec(doc))) == ()  # control: sane bounds
    doc["tables"][0]["bounds"]["max_partitions"] = 10**9
    warnings = plan_warnings(plan_release(parse_spec(doc)))
    assert any(
        "max_partitions is 1000000000, but the table has at most 3 cells" in w for w in warnings
    )
    assert any("lower bounds.max_partitions (1000000000)" in w for w in warnings)
    doc["output"]["noise_warning_multiple"] = 10**12  # the operator accepts the noise
    assert not any("standard deviation" in w for w in plan_warnings(plan_release(parse_spec(doc))))


def test_scratch_directories_are_owner_only_and_stale_ones_are_removed(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from jobs import session

    monkeypatch.setattr(session.tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{session.SCRATCH_PREFIX}999999999-old"  # no such process
    (dead / "blockmgr-1").mkdir(parents=True)
    alive = tmp_path / f"{session.SCRATCH_PREFIX}{os.getpid()}-running"
    alive.mkdir()
    fresh = session._new_scratch()
    assert fresh.parent == tmp_path and fresh.stat().st_mode & 0o777 == 0o700
    assert not dead.exists() and alive.exists()  # a running process keeps its own


@pytest.mark.integration
def test_a_failed_run_removes_its_scratch_directory(tmp_path: Path, spark: Any) -> None:
    import subprocess
    import sys

    from tests.test_jobs import _env

    run = prepare(tmp_path, spark)
    input_rows([(1, "a", MARKER)], "pid long, g string, note string")(run)  # 'v' is missing
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(run.doc))
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    exe = str(Path(sys.executable).parent / "dprelease")
    cmd = [exe, "-v", "run", str(spec), "--release-id", RID, "--master", "local[1]"]
    done = subprocess.run(
        cmd, env=_env() | {"TMPDIR": str(scratch_root)}, capture_output=True, text=True
    )
    assert done.returncode == INPUT, done.stderr[-2000:]
    assert MARKER not in done.stderr + done.stdout
    assert f"scratch files in {scratch_root}/dprelease-spark-" in done.stderr  # it was made
    assert list(scratch_root.glob("dprelease-spark-*")) == []  # and removed


@pytest.mark.integration
def test_a_file_failing_in_a_task_shows_no_bytes_of_it_at_the_default_level(
    tmp_path: Path, spark: Any
) -> None:
    """Spark's executor and task errors quote the failing file's bytes; the console command,
    with Spark at its default level, shows none of them (a separate process: the JVM's own
    stderr is read too). Control: with the show-errors switch, Spark's text comes through."""
    import subprocess
    import sys

    from tests.test_jobs import _env

    run = prepare(tmp_path, spark)
    _corrupt_second_file(run)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(run.doc))
    exe = str(Path(sys.executable).parent / "dprelease")
    cmd = [exe, "run", str(spec), "--release-id", RID, "--master", "local[1]"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert done.returncode == INPUT, done.stderr[-2000:]
    assert "cannot be read as its format" in done.stderr
    shown = done.stdout + done.stderr
    assert MARKER not in shown and "magic number" not in shown and "part-zzzz" not in shown
    loud = _env() | {"DPRELEASE_SHOW_ERRORS": "1"}
    control = subprocess.run(cmd, env=loud, capture_output=True, text=True)
    assert control.returncode != 0 and "magic number" in control.stdout + control.stderr
    assert spent(run) == 0


@pytest.mark.parametrize("requested", ["ALL", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"])
def test_data_printing_loggers_are_held_at_every_requested_level(requested: str) -> None:
    from jobs import spark_logs

    order = {name: i for i, name in enumerate(spark_logs.LEVELS)}
    held = spark_logs.held_levels(requested, show=False)
    assert set(held) == set(spark_logs.HELD)
    for name, level in held.items():  # never more verbose than its hold nor than asked
        assert order[level] >= max(order[spark_logs.HELD[name]], order[requested]), name
    # the code generator and the plans hold the secret salts: never below WARN
    for name in ("org.apache.spark.sql.catalyst", "org.apache.spark.sql.execution"):
        assert order[held[name]] >= order["WARN"]
    assert spark_logs.held_levels(requested, show=True) == {}  # control: the switch lifts it
