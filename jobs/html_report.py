"""``dprelease report``: one self-contained HTML page about a published release, built from its
manifest and its released tables only (nothing private), readable offline. A local release is
read without Spark; one at a URI (``s3a://``, ``hdfs://``, ...) through a Spark session.

The page states the budget and how it was split, each table's error against cell size and its
intervals, released cells under private selection, whether the levels add up, and what the
release does and does not protect, in plain words. Charts are Plotly's, with plotly.js inlined
once in the page (no network needed to read it).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from dp_ops.errors import InputDataError, InternalError
from jobs.io import read_table
from jobs.storage import join, scheme
from pipelines.spark_compat import to_arrow

MAX_POINTS = 5_000
"""Cells drawn per scatter chart (the smallest keys first); every cell counts in the figures."""

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table.facts { border-collapse: collapse; margin: 0.5em 0; }
table.facts td, table.facts th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
.note { color: #555; font-size: 0.92em; }
.ok { color: #1a7f37; } .bad { color: #b42318; font-weight: bold; }
"""


class ReleaseFiles:
    """The files of a committed release: local ones read directly; a URI (``s3a://``,
    ``hdfs://``, ``file://``, ...) read through Spark, classic or Connect, which must then be
    given."""

    def __init__(self, location: str | Path, spark: Any = None) -> None:
        self.location = str(location)
        self.remote = scheme(self.location) is not None
        if self.remote and spark is None:
            raise InternalError("a release at a URI is read through Spark: pass a session")
        self._spark = spark

    @property
    def name(self) -> str:
        """The release directory's last name (its release id)."""
        return self.location.rstrip("/").rsplit("/", 1)[-1] or "release"

    def text(self, name: str) -> str | None:
        """A small text file of the release, or None when it is missing."""
        if not self.remote:
            try:
                return (Path(self.location) / name).read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
        try:
            row = self._spark.read.text(join(self.location, name), wholetext=True).first()
        except Exception as exc:  # Spark's AnalysisException, classic or Connect
            if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
                return None
            raise
        return None if row is None else str(row[0])

    def table(self, name: str, fmt: str) -> pa.Table | None:
        """A released table, or None when a local one is missing."""
        if not self.remote:
            path = Path(self.location) / name
            if not path.exists():
                return None
            return pads.dataset(str(path), format="csv" if fmt == "csv" else "parquet").to_table()
        # missing or unreadable: InputDataError (exit 3) naming the path, as for any input
        return to_arrow(read_table(self._spark, join(self.location, name), fmt, what="report"))


def _read_manifest(files: ReleaseFiles) -> dict[str, Any]:
    path = join(files.location, "manifest.json")
    try:
        text = files.text("manifest.json")
        if text is None:
            raise InputDataError(
                f"report: {files.location!r} holds no manifest.json; give the directory of a "
                "committed release, <output>/<release-id>"
            )
        manifest: dict[str, Any] = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(f"report: cannot read {path!r} as JSON: {exc}") from None
    if not isinstance(manifest, dict) or "tables" not in manifest or "budget" not in manifest:
        raise InputDataError(f"report: {path!r} is not a dprelease manifest")
    return manifest


def _read_table(files: ReleaseFiles, name: str, fmt: str) -> pa.Table:
    table = files.table(name, fmt)
    if table is None:
        raise InputDataError(f"report: the released table {name!r} is missing from the release")
    return table


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A column as float64 (nulls as NaN)."""
    return np.asarray(pc.cast(table.column(column), pa.float64()).to_numpy(), dtype=float)


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


def _facts(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{_num(v)}</td></tr>" for k, v in rows)
    return f"<table class='facts'>{cells}</table>"


class _Page:
    """The page's parts, in order; charts become divs that plotly.js (inlined once) draws."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.charts = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def chart(self, figure: Any) -> None:
        import plotly.io as pio

        figure.update_layout(height=360, margin={"l": 60, "r": 20, "t": 50, "b": 50})
        self.charts += 1
        div = pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{self.charts}",
            config={"displaylogo": False, "responsive": True},
        )
        self.add(f"<div class='chart'>{div}</div>")


def _budget_section(page: _Page, manifest: dict[str, Any]) -> None:
    import plotly.graph_objects as go

    budget = manifest["budget"]
    declared, spent = budget["declared"], budget["spent"]
    page.add("<h2>Budget</h2>")
    page.add(
        _facts(
            [
                ("declared epsilon", declared.get("epsilon")),
                ("declared delta", declared.get("delta")),
                ("declared rho (zCDP)", declared.get("rho")),
                ("spent epsilon", spent.get("epsilon")),
                ("spent delta", spent.get("delta")),
                ("spent rho (zCDP)", spent.get("rho")),
                ("composition", budget.get("composition")),
            ]
        )
    )
    tables = manifest["tables"]
    in_rho = declared.get("rho") is not None
    names = [t["name"] for t in tables]
    figure = go.Figure()
    if in_rho:
        figure.add_bar(x=names, y=[t["budget"]["rho"] for t in tables], name="rho")
        title = "rho (zCDP) given to each table"
    else:
        measured = [t["budget"]["measurement_epsilon"] for t in tables]
        selection = [t["budget"]["epsilon"] - m for t, m in zip(tables, measured, strict=True)]
        figure.add_bar(x=names, y=measured, name="measurements")
        figure.add_bar(x=names, y=selection, name="partition selection")
        figure.update_layout(barmode="stack")
        title = "epsilon given to each table"
    figure.update_layout(title=title, yaxis_title="rho" if in_rho else "epsilon")
    page.chart(figure)


def _series_section(page: _Page, series: dict[str, Any]) -> None:
    """A period of a series: its place, the tree, and the noise of the totals to date over the
    whole series beside summing one release per period."""
    import plotly.graph_objects as go

    from dp_ops.continual import to_date_sd

    page.add(f"<h2>Series {html.escape(str(series['name']))}</h2>")
    page.add(
        _facts(
            [
                ("period", f"{series['position']} of {series['horizon']} {series['period']}s"),
                ("runs", f"{series['start']} to {series['end']}"),
                ("periods per privacy unit", series["max_periods_per_unit"]),
                ("mechanism", series["mechanism"]),
                ("nodes measured now", ", ".join(series["nodes_measured"])),
                ("nodes in the total to date", ", ".join(series["to_date_nodes"])),
            ]
        )
    )
    horizon, depth = series["horizon"], series["levels"]
    periods = list(range(1, horizon + 1))
    for table in series["tables"]:
        for m in table["metrics"]:
            if "period_sd" not in m:
                continue
            alone = m["summed_periods_sd"] / math.sqrt(series["position"])
            figure = go.Figure()
            figure.add_scatter(
                x=periods,
                y=[to_date_sd(t, horizon, m["period_sd"], depth) for t in periods],
                name="this series (tree)",
            )
            figure.add_scatter(
                x=periods,
                y=[alone * math.sqrt(t) for t in periods],
                name="summing one release per period",
            )
            figure.update_layout(
                title=f"{table['name']}.{m['name']}_to_date: noise sd by period",
                xaxis_title="period",
                yaxis_title="standard deviation",
            )
            page.chart(figure)


def _main_metric(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The table's first metric with an interval: what its charts show."""
    for m in entry["metrics"]:
        if (m.get("interval") or {}).get("half_width") is not None:
            return m
    return None


def _errors(
    table: pa.Table, metric: dict[str, Any], half_width: float | None
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(values, half-widths per cell, per-cell?) for the metric; None without values."""
    name = metric["name"]
    if name not in table.column_names or table.num_rows == 0:
        return None
    values = _floats(table, name)
    own = f"{name}_halfwidth"
    if own in table.column_names:
        halves = _floats(table, own)
        return values, halves, True
    if half_width is None:
        return None
    return values, np.full(len(values), float(half_width)), False


def _table_section(
    page: _Page, manifest: dict[str, Any], entry: dict[str, Any], release_dir: ReleaseFiles
) -> None:
    import plotly.graph_objects as go

    name = entry["name"]
    page.add(f"<h2>Table {html.escape(name)}</h2>")
    b = entry["budget"]
    facts = [
        ("dimensions", ", ".join(entry["dimensions"]) or "(total)"),
        ("released cells", entry.get("released_cells")),
        ("epsilon", b.get("epsilon")),
        ("delta", b.get("delta")),
        ("rho", b.get("rho")),
        ("noise", b.get("noise_family")),
        ("max cells per person (L0)", entry["bounds"]["max_partitions"]),
        ("max rows per person and cell (Linf)", entry["bounds"]["max_rows_per_partition"]),
    ]
    page.add(_facts(facts))
    metrics = [
        f"{html.escape(m['name'])}: {html.escape(str(m.get('mechanism', '')))}; "
        f"{(m.get('interval') or {}).get('confidence', 0.95):.0%} half-width "
        f"{_num((m.get('interval') or {}).get('half_width'))}"
        for m in entry["metrics"]
    ]
    page.add("<ul>" + "".join(f"<li>{m}</li>" for m in metrics) + "</ul>")
    table = _read_table(release_dir, entry.get("path", name), entry.get("format", "parquet"))
    metric = _main_metric(entry)
    if metric is not None:
        half = metric["interval"]["half_width"]
        confidence = metric["interval"].get("confidence", 0.95)
        errors = _errors(table, metric, half)
        if errors is not None:
            values, halves, per_cell = errors
            shown = slice(0, MAX_POINTS)
            size = np.maximum(values, 1.0)
            figure = go.Figure(
                go.Scatter(
                    x=size[shown],
                    y=(halves / size)[shown],
                    mode="markers",
                    marker={"size": 5, "opacity": 0.6},
                    name=metric["name"],
                )
            )
            figure.update_xaxes(type="log", title=f"released {metric['name']} (at least 1)")
            figure.update_yaxes(type="log", title=f"{confidence:.0%} half-width / value")
            figure.update_layout(
                title=f"{metric['name']}: relative error against cell size"
                + (" (per cell)" if per_cell else " (one noise for every cell)")
            )
            page.chart(figure)
            hist = go.Figure(go.Histogram(x=values, nbinsx=50, name=metric["name"]))
            hist.update_layout(
                title=f"{metric['name']}: released values ({len(values)} cells)",
                xaxis_title=metric["name"],
                yaxis_title="cells",
            )
            page.chart(hist)
            small = float(np.mean(halves >= values)) if len(values) else 0.0
            page.add(
                f"<p class='note'>{small:.1%} of the released cells are within one half-width of "
                "zero: their values say little beyond their order of magnitude.</p>"
            )
    p = entry.get("partitions", {})
    if p.get("type") == "private":
        _selection(page, entry, table)
    if "levels" in entry:
        _levels(page, entry, table, release_dir)


def _selection(page: _Page, entry: dict[str, Any], table: pa.Table) -> None:
    import plotly.graph_objects as go

    p = entry["partitions"]
    even, sure = p.get("units_for_even_odds"), p.get("units_for_95_percent")
    declared, released = p.get("declared_cells"), entry.get("released_cells")
    suppressed = declared - released if declared is not None and released is not None else None
    page.add("<h3>Private partition selection</h3>")
    page.add(
        "<p>The cells of this table were not declared: a cell appears only when its noisy count "
        f"of persons passed a threshold. A cell with {_num(even)} persons is released half the "
        f"time, one with {_num(sure)} persons 95% of the time; smaller cells are mostly "
        "suppressed, so this table's totals undercount.</p>"
    )
    page.add(
        _facts(
            [
                ("strategy", p.get("strategy")),
                ("threshold", p.get("threshold")),
                ("pre-threshold", p.get("pre_threshold")),
                ("selection epsilon", p.get("epsilon")),
                ("selection delta", p.get("delta")),
                ("released cells", released),
                ("declared cells (the domains' cross product)", declared),
                ("suppressed cells (declared, not released)", suppressed),
            ]
        )
    )
    column = "privacy_unit_count" if "privacy_unit_count" in table.column_names else None
    if column is None or table.num_rows == 0:
        return
    values = _floats(table, column)
    figure = go.Figure(go.Histogram(x=values, nbinsx=50, name="released cells"))
    for units, label in ((even, "released half the time"), (sure, "released 95% of the time")):
        if units is not None:
            figure.add_vline(x=units, line_dash="dash", annotation_text=label)
    figure.update_layout(
        title="released cells by their noisy count of persons",
        xaxis_title="privacy_unit_count",
        yaxis_title="cells",
    )
    page.chart(figure)


def _levels(
    page: _Page, entry: dict[str, Any], finest: pa.Table, release_dir: ReleaseFiles
) -> None:
    """Whether every released level adds up to the levels it nests in, from the tables."""
    outputs = entry["levels"]["outputs"]
    tables = {entry["name"]: (tuple(entry["dimensions"]), finest)}
    for out in outputs:
        if out["name"] not in tables:
            read = _read_table(release_dir, out.get("path", out["name"]), entry.get("format", ""))
            tables[out["name"]] = (tuple(out["dimensions"]), read)
    metrics = [
        m["name"] for m in entry["metrics"] if m.get("kind") in ("count", "privacy_unit_count")
    ]
    rows = []
    for child, (child_dims, child_table) in tables.items():
        for parent, (parent_dims, parent_table) in tables.items():
            nested = set(parent_dims) < set(child_dims)
            if not nested or parent == child:
                continue
            for metric in metrics:
                if metric not in child_table.column_names:
                    continue
                diff = _largest_difference(child_table, parent_table, list(parent_dims), metric)
                rows.append((child, parent, metric, diff))
    if not rows:
        return
    page.add("<h3>Consistency across levels</h3>")
    page.add(
        "<p>Each finer table summed over its extra dimensions, against the coarser table it "
        "nests in (from the released files):</p>"
    )
    body = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{html.escape(p)}</td><td>{html.escape(m)}</td>"
        f"<td class='{'ok' if d == 0 else 'bad'}'>{_num(d)}</td></tr>"
        for c, p, m, d in rows
    )
    page.add(
        "<table class='facts'><tr><th>finer table</th><th>coarser table</th><th>metric</th>"
        f"<th>largest |sum - value|</th></tr>{body}</table>"
    )


def _largest_difference(child: pa.Table, parent: pa.Table, dims: list[str], metric: str) -> float:
    sums = child.group_by(dims).aggregate([(metric, "sum")]) if dims else None
    if sums is None:
        total = float(np.nansum(_floats(child, metric)))
        value = float(np.nansum(_floats(parent, metric)))
        return abs(total - value)
    joined = sums.join(parent.select([*dims, metric]), keys=dims, join_type="full outer")
    a = np.nan_to_num(_floats(joined, f"{metric}_sum"))
    b = np.nan_to_num(_floats(joined, metric))
    return float(np.max(np.abs(a - b))) if len(a) else 0.0


def _protection(page: _Page, manifest: dict[str, Any]) -> None:
    spent = manifest["budget"]["spent"]
    unit = manifest.get("privacy_unit", "the privacy unit")
    eps, delta = spent.get("epsilon"), spent.get("delta")
    page.add("<h2>What this release protects, and what it does not</h2>")
    page.add(
        "<ul>"
        f"<li><b>Protected:</b> whether any one person (one <code>{html.escape(unit)}</code>, "
        "with all their records) is in the data. Whatever an observer knew beforehand, "
        f"the probability of every table here changes by at most a factor e<sup>{_num(eps)}"
        f"</sup> (plus a chance of {_num(delta)} that this does not hold) with or without that "
        "person.</li>"
        "<li><b>Not protected beyond that budget:</b> other releases of the same people add up; "
        "the lifetime budget of the data (its ledger) bounds them together.</li>"
        "<li><b>Groups:</b> a household of k persons is protected about k times less.</li>"
        "<li><b>Public by declaration:</b> the dimensions' domains, declared keys and the bounds "
        "are part of the specification, not of the data.</li>"
        "<li><b>Accuracy:</b> the intervals cover the noise only; a person's rows beyond the "
        "bounds (cells per person, rows per cell, value clamps) were dropped or clamped before "
        "noise, which biases totals down.</li>"
        "</ul>"
    )


def build_report(release_dir: str | Path, spark: Any = None) -> str:
    """The HTML page of the release at ``release_dir`` (a committed ``<output>/<release-id>``,
    a local path, or a URI read through ``spark``). Raises InputDataError (exit 3) when it is
    not one."""
    import plotly.offline

    files = ReleaseFiles(release_dir, spark)
    manifest = _read_manifest(files)
    page = _Page()
    rid = html.escape(str(manifest.get("release_id", files.name)))
    page.add(f"<h1>Release {rid}</h1>")
    page.add(
        _facts(
            [
                ("created (UTC)", manifest.get("created_utc")),
                ("privacy unit", manifest.get("privacy_unit")),
                ("tables", len(manifest["tables"])),
                ("spec SHA-256", manifest.get("spec_sha256")),
            ]
        )
    )
    _budget_section(page, manifest)
    if "series" in manifest:
        _series_section(page, manifest["series"])
    for entry in manifest["tables"]:
        _table_section(page, manifest, entry, files)
    _protection(page, manifest)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in manifest.get("notes", []))
    page.add(f"<h2>Notes from the manifest</h2><ul>{notes}</ul>")
    script = plotly.offline.get_plotlyjs()
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Release {rid}</title><style>{STYLE}</style>"
        f"<script>{script}</script></head><body>{''.join(page.parts)}</body></html>"
    )


def write_report(
    release_dir: str | Path, output: str | Path | None = None, spark: Any = None
) -> Path:
    """Write the page to ``output`` (default ``report-<release-id>.html`` here); a release at a
    URI is read through ``spark``."""
    text = build_report(release_dir, spark)
    name = ReleaseFiles(release_dir, spark).name
    path = Path(output) if output else Path(f"report-{name}.html")
    path.write_text(text, encoding="utf-8")
    return path
