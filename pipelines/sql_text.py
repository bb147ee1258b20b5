"""Per-row expressions written as Spark SQL text, parsed once by the JVM.

Every pyspark ``Column`` operation (``F.col``, ``F.lit``, ``+``, ``.cast``, ``.alias`` ...) is a
py4j call into the driver's JVM, and so is the end of every Column object. Each call is a round
trip over a local socket, and building a table's bounded aggregation from Column objects takes
hundreds of them: a fixed cost per table, whatever the size of the data. The expressions the
release evaluates on every row (cell identities, priorities, clamped grid values, aggregates) are
therefore written as SQL text: ``df.selectExpr(...)`` or one :func:`expr` per column, the same
expressions and the same plan for a handful of calls.

Names are quoted (:func:`name`), so a column name is never read as SQL; numbers are rendered so
that the JVM reads back exactly the Python value (:func:`long`, :func:`double`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

from dp_ops.errors import InternalError


def name(column: str) -> str:
    """``column`` as a quoted SQL identifier: any name, dots and backticks included."""
    return "`" + column.replace("`", "``") + "`"


def long(value: int) -> str:
    """A BIGINT literal (64-bit, signed)."""
    if isinstance(value, bool) or not -(2**63) <= value < 2**63:
        raise InternalError(f"not a 64-bit integer: {value!r}")
    return f"{value}L"


def double(value: float) -> str:
    """A DOUBLE literal that reads back as exactly ``value`` (finite)."""
    v = float(value)
    if not math.isfinite(v):
        raise InternalError(f"not a finite number: {value!r}")
    return f"{v!r}D".replace("e", "E")


def string(value: str) -> str:
    """A STRING literal of ``value`` (any text: written as its UTF-8 bytes in hex, so no quote
    or backslash in it is ever read as SQL)."""
    return f"decode(unhex('{value.encode('utf-8').hex()}'), 'UTF-8')"


def round_half_up(x: str) -> str:
    """The DOUBLE expression ``x`` rounded to the nearest integer, halves away from zero: a
    BIGINT, exactly :func:`dp_ops.fixed_point.round_half_up` of the same double.

    Spark's ``round`` of a double goes through a BigDecimal per row; ``floor(x + 0.5)`` is two
    machine operations. ``x`` is written three times (Spark evaluates a repeated subexpression
    once) and must stay within +-2^52 (:data:`dp_ops.fixed_point.MAX_STEPS`), where ``floor`` is
    exact.
    """
    return f"IF(({x}) >= 0.0D, floor(({x}) + 0.5D), -floor(0.5D - ({x})))"


def keyed_hash(salt: tuple[int, int], exprs: Sequence[str]) -> str:
    """A 64-bit hash of the SQL expressions ``exprs``, keyed by two secret 64-bit integers."""
    return f"xxhash64({long(salt[0])}, {long(salt[1])}, {', '.join(exprs)})"


def aliased(text: str, alias: str) -> str:
    """``text AS alias``, for ``selectExpr``."""
    return f"{text} AS {name(alias)}"


def expr(text: str, alias: str | None = None) -> Column:
    """One Column parsed from ``text`` (one py4j call), named ``alias`` if given."""
    return F.expr(text if alias is None else aliased(text, alias))
