"""The privacy-budget ledger: what every release of a dataset spent, against its lifetime budget.

An embedded SQLite file holds one row per dataset (its lifetime epsilon and delta) and one row per
release charged against it. Budgets are exact fractions stored as text, so sums never round.

* A release is charged in one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock serializes
  concurrent chargers, so two jobs started at once cannot both pass the check.
* Charging the same (dataset, release id) again is a no-op: a retried task is not charged twice.
* A crash inside the transaction leaves no half record (SQLite rolls it back); a crash after the
  commit leaves the charge in place, which errs on the side of privacy.

Composition across releases is basic: epsilons add, deltas add.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from dp_ops.errors import BudgetError, SpecError

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset TEXT PRIMARY KEY,
    epsilon TEXT NOT NULL,
    delta TEXT NOT NULL,
    created_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    dataset TEXT NOT NULL REFERENCES datasets(dataset),
    release_id TEXT NOT NULL,
    epsilon TEXT NOT NULL,
    delta TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    charged_utc TEXT NOT NULL,
    PRIMARY KEY (dataset, release_id)
);
"""


@dataclass(frozen=True)
class Budget:
    epsilon: Fraction
    delta: Fraction

    def __add__(self, other: Budget) -> Budget:
        return Budget(self.epsilon + other.epsilon, self.delta + other.delta)

    def __str__(self) -> str:
        return f"epsilon {float(self.epsilon):.6g}, delta {float(self.delta):.3g}"


@dataclass(frozen=True)
class Account:
    dataset: str
    lifetime: Budget
    spent: Budget
    releases: tuple[tuple[str, Budget, str], ...]
    """(release id, budget, charged at UTC) in charge order."""

    @property
    def remaining(self) -> Budget:
        return Budget(
            self.lifetime.epsilon - self.spent.epsilon, self.lifetime.delta - self.spent.delta
        )


class BudgetLedger(Protocol):
    """What the jobs need from a ledger; SQLite is the embedded default (:class:`Ledger`).

    A server-database backend implements the same four calls with the same guarantees: ``charge``
    is atomic and serialized per dataset, and idempotent per (dataset, release id).
    """

    def init(self, dataset: str, lifetime: Budget) -> None: ...

    def account(self, dataset: str) -> Account: ...

    def check(self, dataset: str, release_id: str, request: Budget) -> bool: ...

    def charge(self, dataset: str, release_id: str, request: Budget, spec_sha256: str) -> bool: ...


def open_ledger(location: str | Path) -> BudgetLedger:
    """The ledger at ``location``: a file path (or ``sqlite:///path``) for the SQLite ledger."""
    text = str(location)
    if text.startswith("sqlite:///"):
        return Ledger(text[len("sqlite:///") - 1 :])
    if "://" in text:
        raise SpecError(f"ledger.path: {text!r}: only SQLite ledgers (a file path) are supported")
    return Ledger(text)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Ledger:
    """A SQLite ledger file; safe to share between processes on one file system."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def init(self, dataset: str, lifetime: Budget) -> None:
        """Declare a dataset's lifetime budget (once; a second init is an error)."""
        if lifetime.epsilon <= 0 or not 0 <= lifetime.delta < 1:
            raise SpecError("budget init: need epsilon > 0 and 0 <= delta < 1")
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM datasets WHERE dataset = ?", (dataset,)).fetchone():
                raise SpecError(f"ledger: dataset {dataset!r} already has a lifetime budget")
            db.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?)",
                (dataset, str(lifetime.epsilon), str(lifetime.delta), _now()),
            )

    def account(self, dataset: str) -> Account:
        with self._connect() as db:
            return self._account(db, dataset)

    @staticmethod
    def _account(db: sqlite3.Connection, dataset: str) -> Account:
        row = db.execute(
            "SELECT epsilon, delta FROM datasets WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise BudgetError(
                f"ledger: dataset {dataset!r} has no lifetime budget; declare one with "
                f"'dprelease budget init {dataset} --epsilon E --delta D'"
            )
        charges = db.execute(
            "SELECT release_id, epsilon, delta, charged_utc FROM charges WHERE dataset = ? "
            "ORDER BY charged_utc, release_id",
            (dataset,),
        ).fetchall()
        releases = tuple((r, Budget(Fraction(e), Fraction(d)), at) for r, e, d, at in charges)
        spent = sum((b for _, b, _ in releases), Budget(Fraction(0), Fraction(0)))
        return Account(dataset, Budget(Fraction(row[0]), Fraction(row[1])), spent, releases)

    def check(self, dataset: str, release_id: str, request: Budget) -> bool:
        """BudgetError if ``request`` does not fit; True if this release is already charged."""
        with self._connect() as db:
            return self._check(db, dataset, release_id, request)

    def _check(
        self, db: sqlite3.Connection, dataset: str, release_id: str, request: Budget
    ) -> bool:
        account = self._account(db, dataset)
        if any(r == release_id for r, _, _ in account.releases):
            return True
        left = account.remaining
        if request.epsilon > left.epsilon or request.delta > left.delta:
            raise BudgetError(
                f"ledger: release {release_id!r} of dataset {dataset!r} requests {request}; "
                f"remaining {left} of a lifetime {account.lifetime}. Lower the release's budget "
                "or declare a new dataset."
            )
        return False

    def charge(self, dataset: str, release_id: str, request: Budget, spec_sha256: str) -> bool:
        """Charge ``request`` in one transaction; False if it was already charged (a retry)."""
        with self._transaction() as db:
            if self._check(db, dataset, release_id, request):
                return False
            db.execute(
                "INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    release_id,
                    str(request.epsilon),
                    str(request.delta),
                    spec_sha256,
                    _now(),
                ),
            )
            return True
