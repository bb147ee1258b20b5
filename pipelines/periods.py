"""Period labels of a release series: ``2027-03`` (month), ``2027-Q1`` (quarter), ``2027``
(year), ``2027-03-15`` (day); their position in the series, counted from its start (1)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from dp_ops.errors import SpecError

PeriodKind = Literal["day", "month", "quarter", "year"]
KINDS: tuple[PeriodKind, ...] = ("day", "month", "quarter", "year")

_FORMS = {
    "day": (re.compile(r"(\d{4})-(\d{2})-(\d{2})"), "2027-03-15"),
    "month": (re.compile(r"(\d{4})-(\d{2})"), "2027-03"),
    "quarter": (re.compile(r"(\d{4})-Q([1-4])"), "2027-Q1"),
    "year": (re.compile(r"(\d{4})"), "2027"),
}


def ordinal(label: str, kind: PeriodKind, where: str = "--period") -> int:
    """A period's number on a running count of ``kind`` periods; SpecError saying the form if
    ``label`` is not one."""
    pattern, example = _FORMS[kind]
    match = pattern.fullmatch(label) if isinstance(label, str) else None
    try:
        if match is None:
            raise ValueError
        year = int(match.group(1))
        if kind == "day":
            return dt.date(year, int(match.group(2)), int(match.group(3))).toordinal()
        if kind == "month":
            month = int(match.group(2))
            if not 1 <= month <= 12:
                raise ValueError
            return year * 12 + month - 1
        if kind == "quarter":
            return year * 4 + int(match.group(2)) - 1
        return year
    except ValueError:
        raise SpecError(
            f"{where}: {label!r} is not a {kind} of the series; write it as {example}"
        ) from None


def label(number: int, kind: PeriodKind) -> str:
    """The label of the period :func:`ordinal` numbers ``number``."""
    if kind == "day":
        return dt.date.fromordinal(number).isoformat()
    if kind == "month":
        return f"{number // 12:04d}-{number % 12 + 1:02d}"
    if kind == "quarter":
        return f"{number // 4:04d}-Q{number % 4 + 1}"
    return f"{number:04d}"


def position(period: str, start: str, kind: PeriodKind, horizon: int) -> int:
    """``period``'s place in a series of ``horizon`` periods from ``start``: 1 .. horizon;
    SpecError outside it."""
    t = ordinal(period, kind) - ordinal(start, kind, "series.start") + 1
    if not 1 <= t <= horizon:
        last = label(ordinal(start, kind) + horizon - 1, kind)
        raise SpecError(
            f"--period: {period} is outside the series, which runs from {start} to {last} "
            f"({horizon} periods); a later period needs a new series"
        )
    return t
