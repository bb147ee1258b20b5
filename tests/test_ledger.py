"""The budget ledger: exact sums, refusal before work, no double charge, concurrency, crashes."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from dp_ops.errors import BudgetError
from jobs.cli import main
from jobs.ledger import Attempt, Budget, Ledger
from pipelines.plan import ReleaseCost
from tests.conftest import base_spec


def third() -> Budget:
    return Budget(Fraction(1, 3), Fraction(0))


def at(release_id: str, spec: str = "h", location: str = "/releases") -> Attempt:
    """An attempt at ``release_id`` from the spec with SHA-256 ``spec``, published at
    ``location``."""
    return Attempt(release_id, spec, f"{location}/{release_id}")


def test_sums_are_exact_and_an_overspend_is_refused_with_the_figures(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.init("persons", Budget(Fraction(1), Fraction(1, 10**6)))
    for i in range(3):
        assert not ledger.charge("persons", at(f"r{i}"), third()).charged
    account = ledger.account("persons")
    assert account.spent.epsilon == 1 and account.remaining.epsilon == 0  # exactly, no rounding
    with pytest.raises(
        BudgetError, match=r"requests epsilon 0\.333333.*remaining epsilon 0.*lifetime epsilon 1"
    ):
        ledger.charge("persons", at("r3"), third())
    assert len(ledger.account("persons").releases) == 3


def test_a_retried_release_is_not_charged_twice(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.init("d", Budget(Fraction(1), Fraction(0)))
    assert ledger.charge("d", at("2026-11-22"), third()).charged is False
    assert ledger.charge("d", at("2026-11-22"), third()).charged is True
    assert ledger.account("d").spent.epsilon == Fraction(1, 3)


def test_unknown_dataset_and_double_init_are_clear_errors(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(
        BudgetError, match="has no lifetime budget; declare one with 'dprelease budget init d"
    ):
        ledger.charge("d", at("r"), third())
    ledger.init("d", Budget(Fraction(1), Fraction(0)))
    with pytest.raises(Exception, match="already has a lifetime budget"):
        ledger.init("d", Budget(Fraction(2), Fraction(0)))


def _charge_in_process(path: str, release: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        admission = Ledger(path).charge("d", at(release), Budget(Fraction(3, 10), Fraction(0)))
        results.put((release, not admission.charged))
    except BudgetError:
        results.put((release, False))


def test_concurrent_charges_never_overspend(tmp_path: Path) -> None:
    path = str(tmp_path / "l.sqlite")
    Ledger(path).init("d", Budget(Fraction(1), Fraction(0)))
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_charge_in_process, args=(path, f"r{i}", start, results))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(ok for _, ok in outcomes) == 3  # 3 x 0.3 fit in 1.0, a fourth would not
    assert Ledger(path).account("d").spent.epsilon == Fraction(9, 10)


def _crash_mid_transaction(path: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO charges VALUES ('d', 'half', '1/2', '0', 'h', 'now')")
    os._exit(1)  # killed before COMMIT


def test_a_crash_mid_transaction_leaves_no_half_record(tmp_path: Path) -> None:
    path = str(tmp_path / "l.sqlite")
    Ledger(path).init("d", Budget(Fraction(1), Fraction(0)))
    proc = mp.get_context("spawn").Process(target=_crash_mid_transaction, args=(path,))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 1
    ledger = Ledger(path)
    assert ledger.account("d").releases == ()
    assert not ledger.charge("d", at("after"), third()).charged  # usable and consistent


def test_refused_before_any_spark_work_with_exit_code_4(tmp_path: Path, capsys: Any) -> None:
    ledger_path = tmp_path / "l.sqlite"
    Ledger(ledger_path).init("persons", Budget(Fraction(1, 2), Fraction(0)))
    doc = base_spec(budget={"epsilon": 1.0})
    doc["input"]["path"] = str(tmp_path / "does-not-exist")  # never read: refusal comes first
    doc["output"]["path"] = str(tmp_path / "out")
    doc["ledger"] = {"dataset": "persons", "path": str(ledger_path)}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["run", str(spec), "--release-id", "r1"]) == 4
    err = capsys.readouterr().err
    assert "requests epsilon 1" in err and "remaining epsilon 0.5" in err
    assert not (tmp_path / "out" / "r1").exists()


def test_budget_commands(tmp_path: Path, capsys: Any) -> None:
    ledger = str(tmp_path / "l.sqlite")
    assert (
        main(["budget", "init", "persons", "--epsilon", "4", "--delta", "1e-6", "--ledger", ledger])
        == 0
    )
    Ledger(ledger).charge("persons", at("2026-q1"), Budget(Fraction(1), Fraction(0)))
    capsys.readouterr()
    assert main(["budget", "show", "persons", "--ledger", ledger]) == 0
    out = capsys.readouterr().out
    assert (
        "lifetime:  epsilon 4, delta 1e-06" in out
        and "remaining: epsilon 3" in out
        and "2026-q1" in out
    )
    assert main(["budget", "show", "nobody", "--ledger", ledger]) == 4


def test_ledger_locations(tmp_path: Path) -> None:
    from dp_ops.errors import SpecError
    from jobs.ledger import open_ledger

    a = open_ledger(f"sqlite:///{tmp_path}/a.sqlite")
    a.init("d", Budget(Fraction(1), Fraction(0)))
    assert (tmp_path / "a.sqlite").exists()
    with pytest.raises(SpecError, match="only SQLite ledgers"):
        open_ledger("postgresql://db/ledger")


def rho(r: Fraction) -> ReleaseCost:
    return ReleaseCost(None, Fraction(0), r)


def test_a_rho_account_adds_rho_exactly_and_refuses_what_is_not_zcdp(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.init("d", Budget(Fraction(0), Fraction(0), Fraction(1, 2)))
    for i in range(3):
        ledger.charge("d", at(f"g{i}"), rho(Fraction(1, 6)))
    account = ledger.account("d")
    assert account.spent.rho == Fraction(1, 2) and account.remaining.rho == 0  # exactly
    with pytest.raises(BudgetError, match=r"requests rho 1e-06; remaining rho 0 of a lifetime"):
        ledger.charge("d", at("g3"), rho(Fraction(1, 10**6)))
    private = ReleaseCost(Fraction(1), Fraction(1, 10**6), None)
    with pytest.raises(BudgetError, match="selects partitions privately"):
        ledger.admit("d", at("p"), private)


def test_an_epsilon_release_is_charged_its_zcdp_cost_in_a_rho_account(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.init("d", Budget(Fraction(0), Fraction(0), Fraction(1)))
    laplace = ReleaseCost(Fraction(1), Fraction(0), Fraction(1, 2))  # epsilon 1 -> rho 1/2
    ledger.charge("d", at("a"), laplace)
    ledger.charge("d", at("b"), laplace)
    assert ledger.account("d").spent == Budget(Fraction(0), Fraction(0), Fraction(1))
    with pytest.raises(BudgetError, match=r"requests rho 0\.5; remaining rho 0"):
        ledger.admit("d", at("c"), laplace)


def test_an_epsilon_account_charges_a_rho_release_its_conversion(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.init("d", Budget(Fraction(2), Fraction(1, 10**5)))
    converted = ReleaseCost(Fraction(3, 2), Fraction(1, 10**6), Fraction(1, 20))
    ledger.charge("d", at("a"), converted)
    assert ledger.account("d").spent == Budget(Fraction(3, 2), Fraction(1, 10**6))
    with pytest.raises(BudgetError, match=r"add budget\.delta to the spec"):
        ledger.admit("d", at("b"), rho(Fraction(1, 100)))
    with pytest.raises(BudgetError, match=r"requests epsilon 1\.5.*remaining epsilon 0\.5"):
        ledger.admit("d", at("b"), converted)


def test_a_ledger_file_from_before_rho_accounts_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE datasets (dataset TEXT PRIMARY KEY, epsilon TEXT NOT NULL, "
            "delta TEXT NOT NULL, created_utc TEXT NOT NULL);"
            "CREATE TABLE charges (dataset TEXT NOT NULL, release_id TEXT NOT NULL, "
            "epsilon TEXT NOT NULL, delta TEXT NOT NULL, spec_sha256 TEXT NOT NULL, "
            "charged_utc TEXT NOT NULL, PRIMARY KEY (dataset, release_id));"
            "INSERT INTO datasets VALUES ('d', '1', '0', 't');"
            "INSERT INTO charges VALUES ('d', 'old', '1/4', '0', 'h', 't');"
        )
    db.close()
    ledger = Ledger(path)
    assert ledger.account("d").spent == Budget(Fraction(1, 4), Fraction(0))
    assert not ledger.charge("d", at("new"), third()).charged
    assert ledger.account("d").remaining.epsilon == Fraction(5, 12)


def test_budget_init_in_rho_and_show(tmp_path: Path, capsys: Any) -> None:
    ledger = str(tmp_path / "l.sqlite")
    assert main(["budget", "init", "p", "--rho", "0.5", "--ledger", ledger]) == 0
    Ledger(ledger).charge("p", at("2026-q1"), rho(Fraction(1, 8)))
    capsys.readouterr()
    assert main(["budget", "show", "p", "--ledger", ledger]) == 0
    out = capsys.readouterr().out
    assert "accounted in rho-zCDP" in out and "remaining: rho 0.375" in out
    assert main(["budget", "init", "q", "--rho", "0.5", "--epsilon", "1", "--ledger", ledger]) == 2
    assert main(["budget", "init", "q", "--rho", "0.5", "--delta", "1e-6", "--ledger", ledger]) == 2
