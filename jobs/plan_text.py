"""``dprelease plan``'s text: the preview (:func:`pipelines.preview.preview`) for a terminal."""

from __future__ import annotations

from typing import Any


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _budget(b: dict[str, Any]) -> str:
    parts = [f"epsilon {_num(b['epsilon'])}"] if b.get("epsilon") is not None else []
    if b.get("delta"):
        parts.append(f"delta {_num(b['delta'])}")
    if b.get("rho") is not None:
        parts.append(f"rho {_num(b['rho'])}")
    return ", ".join(parts) or "nothing"


def _change(c: dict[str, Any]) -> str:
    head = f"{c['bound']} {c['from']:g} -> {c['to']:g}:"
    if "refused" in c:
        return f"{head} not plannable ({c['refused']})"
    groups: dict[str, list[str]] = {}
    for name, (before, after) in c["standard_deviation"].items():
        groups.setdefault(f"x{after / before:.2f}" if before else _num(after), []).append(name)
    effects = [
        f"{ratio} ({names[0] if len(names) == 1 else f'{len(names)} measurements'})"
        for ratio, names in groups.items()
    ]
    if "units_for_even_odds" in c:
        old, new = c["units_for_even_odds"]
        effects.append(f"even odds at {new} units (now {old})")
    if "noise_family" in c:
        effects.append("noise {} instead of {}".format(*reversed(c["noise_family"])))
    return f"{head} noise sd {', '.join(effects) or 'unchanged'}"


def series_lines(s: dict[str, Any]) -> list[str]:
    """What a series spends per node and how its totals to date grow."""
    lines = [
        f"series {s['name']}: {s['horizon']} {s['period']}s from {s['start']} to {s['end']}, "
        f"each privacy unit in at most {s['max_periods_per_unit']} of them; charged once",
        f"  {s['mechanism']}; the tables below show one node's noise",
    ]
    for t in s["tables"]:
        for m in t["metrics"]:
            if "period_sd" not in m:
                continue
            lines.append(
                f"  {t['name']}.{m['name']}: a period's value sd {_num(m['period_sd'])}; total to "
                f"date at {s['end']} ({len(s['to_date_nodes'])} nodes) sd "
                f"{_num(m['to_date_sd'])}, where summing {s['horizon']} releases of one "
                f"{s['period']} each would have sd {_num(m['summed_periods_sd'])}"
            )
    return lines


def render(preview: dict[str, Any], spec_path: str) -> str:
    conf = preview["confidence"]
    lines = [
        f"plan of {spec_path}: no data read, no budget spent",
        f"declared budget: {_budget(preview['declared'])}; "
        f"the release would spend: {_budget(preview['spent'])}",
    ]
    for column, d in preview["privacy"].get("randomized_response", {}).get("columns", {}).items():
        lines.append(
            f"randomized response: {column} (p_truth {d['p_truth']:g}, p_yes {d['p_yes']:g}): "
            f"each reported answer is {d['local_epsilon']:.4g}-DP locally, before any release"
        )
    if "series" in preview:
        lines += series_lines(preview["series"])
    for t in preview["tables"]:
        b = t["budget"]
        lines += ["", f"table {t['name']} ({_budget(b)}; noise {b['noise_family']})"]
        width = max(
            [len("noised measurement")] + [len(m["measurement"]) for m in t["measurements"]]
        )
        header = f"{'noised measurement':<{width}} {'mechanism':<18} {'epsilon':>8} {'rho':>8}"
        lines.append(f"  {header} {'noise sd':>10} {f'{conf:.0%} +-':>10}")
        for m in t["measurements"]:
            budget = f"{_num(m['epsilon'] or None):>8} {_num(m['rho'] or None):>8}"
            accuracy = f"{_num(m['standard_deviation']):>10} {_num(m['half_width']):>10}"
            lines.append(f"  {m['measurement']:<{width}} {m['mechanism']:<18} {budget} {accuracy}")
        for m in t["metrics"]:
            if "derived_from" in m:
                sources = " and ".join(m["derived_from"])
                lines.append(f"  {m['name']}: post-processing of {sources}")
            if "lead_for_95_percent" in m:
                lines.append(
                    f"  {m['name']}: exponential mechanism over {len(m['categories'])} "
                    f"categories, epsilon {m['epsilon_per_pick']:.4g} per pick and cell; names "
                    f"the most common category with probability 0.95 when it leads by "
                    f"{m['lead_for_95_percent']:.3g} rows"
                )
        p = t["partitions"]
        if p.get("type") == "private":
            units = t["selection_units"]
            if units["0.5"] is None:  # max_partitions: auto
                lines.append(
                    f"  private selection ({p['strategy']}, pre_threshold {p['pre_threshold']}): "
                    "its threshold follows max_partitions, chosen when the release runs"
                )
            else:
                rule = f"threshold {p['threshold']}, " if "threshold" in p else ""
                lines.append(
                    f"  private selection ({p['strategy']}, {rule}pre_threshold "
                    f"{p['pre_threshold']}): a cell is released with probability 0.5 at "
                    f"{units['0.5']} units, 0.95 at {units['0.95']}"
                )
        else:
            lines.append(f"  public keys ({p.get('source', 'inline')})")
        if "allocation" in t:
            a = t["allocation"]
            lines.append(
                f"  levels: detailed cells get {a['detail_share']:.3g} of the table's budget; "
                f"their error grows x{a['detail_error_growth']:.3g} over the table alone"
            )
        if "chosen_bounds" in t:
            c = t["chosen_bounds"]
            chosen = [f"{col}: {', '.join(sides)}" for col, sides in c["columns"].items()]
            which = "; ".join(chosen + (["max_partitions"] if c["max_partitions"] else []))
            lines.append(
                f"  bounds the release chooses itself ({which}): epsilon {c['epsilon']:.4g}, "
                f"about the {c['quantile']:g} quantile of each person's values (or cell count); "
                "the noise they scale is known only then"
            )
        if t["bound_changes"]:
            lines.append(
                "  each bound doubled or halved (noise only: what it drops needs the data):"
            )
            lines += [f"    {_change(c)}" for c in t["bound_changes"]]
    if preview["warnings"]:
        lines += ["", "warnings:"] + [f"  {w}" for w in preview["warnings"]]
    return "\n".join(lines)
