"""The privacy-budget ledger: what every release of a dataset spent, against its lifetime budget.

An embedded SQLite file holds one row per dataset (its lifetime epsilon and delta) and one row per
release charged against it. Budgets are exact fractions stored as text, so sums never round.

* A release is charged in one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock serializes
  concurrent chargers, so two jobs started at once cannot both pass the check.
* A release id is bound, at its first charge, to the spec's SHA-256, the amount and the location
  the release is published at (:meth:`Ledger.admit` holds every rule, for the command line,
  spark-submit and the Python API alike):

  - the same id with another spec or amount is refused (BudgetError, exit 4), whatever happened
    to the first attempt: a release id names one release;
  - charged but never committed (the attempt crashed): the identical spec may be retried, and is
    not charged again;
  - committed (:meth:`Ledger.commit` records when and where): a further attempt at the same
    location is a no-op, and one anywhere else is refused, since it would publish a second draw
    of the same release uncharged.
* A crash inside the transaction leaves no half record (SQLite rolls it back); a crash after the
  commit leaves the charge in place, which errs on the side of privacy.

A dataset keeps its account in one currency, chosen when its lifetime budget is declared:

* (epsilon, delta): releases compose by adding epsilons and deltas; a release whose budget is
  stated in rho is charged its (epsilon(rho, delta), delta) conversion (its spec gives delta);
* rho-zCDP: releases compose by adding rho, which is much tighter for many Gaussian releases; a
  release stated in epsilon is charged the rho of its mechanisms (``epsilon^2 / 2`` for each
  Laplace measurement, the Gaussian rho otherwise); one that selects partitions privately spends
  delta, is not zCDP, and is refused.
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
from pipelines.plan import ReleaseCost

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset TEXT PRIMARY KEY,
    epsilon TEXT NOT NULL,
    delta TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    rho TEXT NOT NULL DEFAULT '0'
);
CREATE TABLE IF NOT EXISTS charges (
    dataset TEXT NOT NULL REFERENCES datasets(dataset),
    release_id TEXT NOT NULL,
    epsilon TEXT NOT NULL,
    delta TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    charged_utc TEXT NOT NULL,
    rho TEXT NOT NULL DEFAULT '0',
    location TEXT,
    committed_utc TEXT,
    PRIMARY KEY (dataset, release_id)
);
"""
_ADDED_COLUMNS = {
    "datasets": {"rho": "TEXT NOT NULL DEFAULT '0'"},
    "charges": {"rho": "TEXT NOT NULL DEFAULT '0'", "location": "TEXT", "committed_utc": "TEXT"},
}
"""Columns added since the first ledger files; older files get them when opened."""


@dataclass(frozen=True)
class Budget:
    """An amount of privacy: (epsilon, delta), or rho (with epsilon = delta = 0)."""

    epsilon: Fraction
    delta: Fraction
    rho: Fraction = Fraction(0)

    @property
    def is_zcdp(self) -> bool:
        return self.rho > 0

    def __add__(self, other: Budget) -> Budget:
        return Budget(self.epsilon + other.epsilon, self.delta + other.delta, self.rho + other.rho)

    def describe(self, zcdp: bool) -> str:
        if zcdp:
            return f"rho {float(self.rho):.6g}"
        return f"epsilon {float(self.epsilon):.6g}, delta {float(self.delta):.3g}"

    def __str__(self) -> str:
        return self.describe(self.is_zcdp)


def amount_for(lifetime: Budget, dataset: str, request: Budget | ReleaseCost) -> Budget:
    """What a release is charged in the currency of the dataset's account."""
    if isinstance(request, Budget):
        if request.is_zcdp != lifetime.is_zcdp:
            raise BudgetError(
                f"ledger: dataset {dataset!r} keeps its account in {currency(lifetime)}"
            )
        return request
    if lifetime.is_zcdp:
        if request.rho is None:
            raise BudgetError(
                f"ledger: dataset {dataset!r} keeps its account in rho-zCDP, and this release "
                "selects partitions privately (approximate DP, not zCDP). Use public keys, or "
                "charge it to a dataset accounted in (epsilon, delta)."
            )
        return Budget(Fraction(0), Fraction(0), request.rho)
    if request.epsilon is None:
        raise BudgetError(
            f"ledger: dataset {dataset!r} keeps its account in (epsilon, delta); a budget stated "
            "in rho is charged as (epsilon, delta)-DP: add budget.delta to the spec to convert it"
        )
    return Budget(request.epsilon, request.delta)


def currency(budget: Budget) -> str:
    """The currency an account with this lifetime budget keeps."""
    return "rho-zCDP" if budget.is_zcdp else "(epsilon, delta)"


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
            self.lifetime.epsilon - self.spent.epsilon,
            self.lifetime.delta - self.spent.delta,
            self.lifetime.rho - self.spent.rho,
        )


@dataclass(frozen=True)
class Admission:
    """What the ledger allows one attempt at a release id (see :meth:`Ledger.admit`)."""

    amount: Budget
    """What the release costs, in the currency of the dataset's account."""
    charged: bool
    """The id was charged before, for this spec and amount: this attempt is not charged again."""
    committed_at: str | None
    """Where the id was published, if it was (then the same location only: a no-op)."""


@dataclass(frozen=True)
class Attempt:
    """One attempt at a release: its id, the SHA-256 of its spec and where it is published."""

    release_id: str
    spec_sha256: str
    location: str
    """The release's directory (an absolute path), or :data:`API_LOCATION` for the Python API."""


API_LOCATION = "python-api"
"""The location of releases handed to a Python caller as DataFrames (nothing is written)."""


class BudgetLedger(Protocol):
    """What the jobs need from a ledger; SQLite is the embedded default (:class:`Ledger`).

    A server-database backend implements the same calls with the same guarantees: ``charge`` is
    atomic and serialized per dataset, and ``admit``'s rules bind a release id to one spec,
    amount and location.
    """

    def init(self, dataset: str, lifetime: Budget) -> None: ...

    def account(self, dataset: str) -> Account: ...

    def admit(self, dataset: str, attempt: Attempt, request: Budget | ReleaseCost) -> Admission: ...

    def charge(
        self, dataset: str, attempt: Attempt, request: Budget | ReleaseCost
    ) -> Admission: ...

    def commit(self, dataset: str, attempt: Attempt) -> None: ...


def open_ledger(location: str | Path) -> BudgetLedger:
    """The ledger at ``location``: a file path (or ``sqlite:///path``) for the SQLite ledger."""
    text = str(location)
    if text.startswith("sqlite:///"):
        return Ledger(text[len("sqlite:///") - 1 :])
    if "://" in text:
        raise SpecError(f"ledger.path: {text!r}: only SQLite ledgers (a file path) are supported")
    return Ledger(text)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """A SQLite ledger file; safe to share between processes on one file system."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)
            for table, added in _ADDED_COLUMNS.items():
                columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in added.items():
                    if name not in columns:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

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
        zcdp_ok = lifetime.rho > 0 and lifetime.epsilon == 0 and lifetime.delta == 0
        approx_ok = lifetime.rho == 0 and lifetime.epsilon > 0 and 0 <= lifetime.delta < 1
        if not (zcdp_ok or approx_ok):
            raise SpecError(
                "budget init: give --epsilon E (> 0) with an optional --delta D in [0, 1), "
                "or --rho R (> 0) alone"
            )
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM datasets WHERE dataset = ?", (dataset,)).fetchone():
                raise SpecError(f"ledger: dataset {dataset!r} already has a lifetime budget")
            db.execute(
                "INSERT INTO datasets (dataset, epsilon, delta, created_utc, rho) "
                "VALUES (?, ?, ?, ?, ?)",
                (dataset, str(lifetime.epsilon), str(lifetime.delta), _now(), str(lifetime.rho)),
            )

    def account(self, dataset: str) -> Account:
        with self._connect() as db:
            return self._account(db, dataset)

    @staticmethod
    def _account(db: sqlite3.Connection, dataset: str) -> Account:
        row = db.execute(
            "SELECT epsilon, delta, rho FROM datasets WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise BudgetError(
                f"ledger: dataset {dataset!r} has no lifetime budget; declare one with "
                f"'dprelease budget init {dataset} --epsilon E --delta D' (or --rho R)"
            )
        charges = db.execute(
            "SELECT release_id, epsilon, delta, rho, charged_utc FROM charges WHERE dataset = ? "
            "ORDER BY charged_utc, release_id",
            (dataset,),
        ).fetchall()
        releases = tuple(
            (r, Budget(Fraction(e), Fraction(d), Fraction(p)), at) for r, e, d, p, at in charges
        )
        spent = sum((b for _, b, _ in releases), Budget(Fraction(0), Fraction(0)))
        lifetime = Budget(Fraction(row[0]), Fraction(row[1]), Fraction(row[2]))
        return Account(dataset, lifetime, spent, releases)

    def _admit(
        self,
        db: sqlite3.Connection,
        dataset: str,
        attempt: Attempt,
        request: Budget | ReleaseCost,
    ) -> Admission:
        account = self._account(db, dataset)
        amount = amount_for(account.lifetime, dataset, request)
        rid = attempt.release_id
        row = db.execute(
            "SELECT epsilon, delta, rho, spec_sha256, location, committed_utc FROM charges "
            "WHERE dataset = ? AND release_id = ?",
            (dataset, rid),
        ).fetchone()
        if row is not None:
            charged = Budget(Fraction(row[0]), Fraction(row[1]), Fraction(row[2]))
            if row[3] != attempt.spec_sha256 or charged != amount:
                raise BudgetError(
                    f"ledger: release id {rid!r} of dataset {dataset!r} was charged "
                    f"{charged} for another spec (SHA-256 {row[3][:12]}...); a release id is "
                    "bound to the spec of its first charge. Rerun that spec unchanged, or give "
                    "this spec a new release id."
                )
            if row[5] is not None and row[4] != attempt.location:
                raise BudgetError(
                    f"ledger: release id {rid!r} of dataset {dataset!r} was published at "
                    f"{row[4]!r}; publishing it at {attempt.location!r} too would release a "
                    "second draw of the same data uncharged. Use a new release id."
                )
            return Admission(amount, True, row[4] if row[5] is not None else None)
        left = account.remaining
        if amount.epsilon > left.epsilon or amount.delta > left.delta or amount.rho > left.rho:
            raise BudgetError(
                f"ledger: release {rid!r} of dataset {dataset!r} requests {amount}; "
                f"remaining {left.describe(amount.is_zcdp)} of a lifetime {account.lifetime}. "
                "Lower the release's budget "
                "or declare a new dataset."
            )
        return Admission(amount, False, None)

    def admit(self, dataset: str, attempt: Attempt, request: Budget | ReleaseCost) -> Admission:
        """What the ledger allows ``attempt``; BudgetError (exit 4) saying why if nothing.

        Refused: a new release that does not fit the remaining budget; a release id charged
        before for another spec or amount; a release id published at another location. Allowed:
        a new release that fits (``charged`` False), a retry of a charged, uncommitted attempt
        with the identical spec (``charged`` True: not charged again), and the identical spec at
        the location it was published at (``committed_at`` set: the caller does nothing).
        """
        with self._connect() as db:
            return self._admit(db, dataset, attempt, request)

    def charge(self, dataset: str, attempt: Attempt, request: Budget | ReleaseCost) -> Admission:
        """Charge ``request`` under the attempt's release id in one transaction, after the checks
        of :meth:`admit`; an id charged before is not charged again (``charged`` True)."""
        with self._transaction() as db:
            admission = self._admit(db, dataset, attempt, request)
            if admission.charged:
                return admission
            amount = admission.amount
            db.execute(
                "INSERT INTO charges (dataset, release_id, epsilon, delta, spec_sha256, "
                "charged_utc, rho, location) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    attempt.release_id,
                    str(amount.epsilon),
                    str(amount.delta),
                    attempt.spec_sha256,
                    _now(),
                    str(amount.rho),
                    attempt.location,
                ),
            )
            return admission

    def commit(self, dataset: str, attempt: Attempt) -> None:
        """Record that the attempt's release was published at its location (once: the first
        commit's time and location stay)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE charges SET committed_utc = ?, location = ? "
                "WHERE dataset = ? AND release_id = ? AND committed_utc IS NULL",
                (_now(), attempt.location, dataset, attempt.release_id),
            )
