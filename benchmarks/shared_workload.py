"""The generator the DP-on-Spark benchmarks share (not a test): census-style microdata with
heavy persons and about 10^5 cells, deterministic from one seed.

Its rules (the same for every tool measured on it):

* 50 states with lognormal(0, 0.8) weights; 3,000 counties nested in them (each state has at
  least one, the rest go to states by weight), county sizes lognormal(0, 1.5);
* about rows / 3 persons with 1-5 rows each (uniform), each with a home county (drawn by size),
  one of 18 age groups (weights 6,6,6,6,7,7,7,6,6,6,6,6,6,5,4,3,2,1.5), sex 1-2 and race 1-7
  (0.60, 0.13, 0.06, 0.01, 0.002, 0.07, 0.128); 15% of rows lie in another county drawn by size;
* per 250,000 rows one heavy person with 1,000 rows over random cells;
* income lognormal(10.6, 0.9) per row; rows shuffled, person ids permuted;
* state and county as dictionary-encoded strings ("01", "01001"); age group, sex, race as
  int32; Parquet row groups of 131,072 rows.

With the default seed: 71,900 cells (state, county, age group, sex) at 10^6 rows and 102,612
at 10^7 (the reference run of these rules had 71,495 and 102,619): just over 10^5 at 10^7, where
a release's choice between the driver and Spark shows.

    python benchmarks/shared_workload.py --rows 1000000 --output /tmp/shared-1e6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STATES = 50
COUNTIES = 3_000
AGE_WEIGHTS = (6, 6, 6, 6, 7, 7, 7, 6, 6, 6, 6, 6, 6, 5, 4, 3, 2, 1.5)
RACE_WEIGHTS = (0.60, 0.13, 0.06, 0.01, 0.002, 0.07, 0.128)
MOVED = 0.15
HEAVY_EVERY = 250_000
HEAVY_ROWS = 1_000
ROW_GROUP = 131_072
SEED = 20261204
CELL = ["state", "county", "age_group", "sex"]


def _geography(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each county's state index, its code within the state, and its share of the population."""
    state_weights = rng.lognormal(0.0, 0.8, STATES)
    rest = rng.choice(STATES, COUNTIES - STATES, p=state_weights / state_weights.sum())
    state_of = np.concatenate([np.arange(STATES), rest])
    sizes = rng.lognormal(0.0, 1.5, COUNTIES)
    order = np.argsort(state_of, kind="stable")
    state_of, sizes = state_of[order], sizes[order]
    first = np.searchsorted(state_of, np.arange(STATES))
    code_in_state = np.arange(COUNTIES) - first[state_of] + 1
    return state_of, code_in_state, sizes / sizes.sum()


def shared_microdata(rows: int, seed: int = SEED) -> pa.Table:
    """``rows`` rows of the shared workload (see the module docstring)."""
    rng = np.random.default_rng(seed)
    state_of, code_in_state, county_p = _geography(rng)
    heavy = max(rows // HEAVY_EVERY, 0)
    light_rows = max(rows - heavy * HEAVY_ROWS, 0)
    # persons of 1-5 rows until the light rows are reached; the last one is cut to fit
    per = rng.integers(1, 6, size=light_rows // 3 + 16)
    while per.sum() < light_rows:
        per = np.concatenate([per, rng.integers(1, 6, size=per.size // 4 + 16)])
    ends = np.cumsum(per)
    persons = int(np.searchsorted(ends, light_rows)) + 1
    per = per[:persons]
    per[-1] -= int(ends[persons - 1]) - light_rows
    person = np.repeat(np.arange(persons), per)
    age_p = np.asarray(AGE_WEIGHTS) / sum(AGE_WEIGHTS)
    home = rng.choice(COUNTIES, persons, p=county_p)[person]
    moved = rng.random(light_rows) < MOVED
    county = np.where(moved, rng.choice(COUNTIES, light_rows, p=county_p), home)
    age = rng.choice(len(AGE_WEIGHTS), persons, p=age_p)[person] + 1
    sex = rng.integers(1, 3, persons)[person]
    race = rng.choice(len(RACE_WEIGHTS), persons, p=RACE_WEIGHTS)[person] + 1
    if heavy:  # each heavy person's rows over random cells
        n = heavy * HEAVY_ROWS
        person = np.concatenate([person, persons + np.repeat(np.arange(heavy), HEAVY_ROWS)])
        county = np.concatenate([county, rng.choice(COUNTIES, n, p=county_p)])
        age = np.concatenate([age, rng.integers(1, len(AGE_WEIGHTS) + 1, n)])
        sex = np.concatenate([sex, rng.integers(1, 3, n)])
        race = np.concatenate([race, rng.choice(len(RACE_WEIGHTS), n, p=RACE_WEIGHTS) + 1])
        persons += heavy
    total = person.size
    ids = rng.permutation(persons).astype(np.int64)[person]
    order = rng.permutation(total)
    state_codes = np.array([f"{s + 1:02d}" for s in range(STATES)])
    county_codes = np.array(
        [f"{state_of[c] + 1:02d}{code_in_state[c]:03d}" for c in range(COUNTIES)]
    )
    county = county[order]
    return pa.table(
        {
            "person_id": ids[order],
            "state": pa.DictionaryArray.from_arrays(
                pa.array(state_of[county], pa.int32()), pa.array(state_codes)
            ),
            "county": pa.DictionaryArray.from_arrays(
                pa.array(county, pa.int32()), pa.array(county_codes)
            ),
            "age_group": age[order].astype(np.int32),
            "sex": sex[order].astype(np.int32),
            "race": race[order].astype(np.int32),
            "income": rng.lognormal(10.6, 0.9, total)[order],
        }
    )


def write_shared(rows: int, path: str | Path, seed: int = SEED) -> pa.Table:
    """Write the workload as one Parquet file under ``path`` (row groups of 131,072 rows)."""
    table = shared_microdata(rows, seed)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-0.parquet", row_group_size=ROW_GROUP)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    table = write_shared(args.rows, args.output, args.seed)
    cells = table.group_by(CELL).aggregate([]).num_rows
    print(f"{table.num_rows:,} rows, {cells:,} cells -> {args.output}")


if __name__ == "__main__":
    main()
