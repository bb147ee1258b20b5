"""``dprelease report`` (jobs.html_report): one self-contained page from a release's manifest and
tables; rendered in headless Chromium without errors, with its charts drawn."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs import cli
from jobs.html_report import build_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def release(demo_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release with a privately selected table and a table with levels."""
    demo = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
    census = yaml.safe_load((ROOT / "conf" / "census_suite.yaml").read_text())
    levels = next(t for t in census["tables"] if t["name"] == "persons_by_county")
    private = next(t for t in demo["tables"] if t["name"] == "persons_by_county")
    doc = {
        **demo,
        "domains": census["domains"],
        "tables": [{**levels, "name": "county_levels"}, private],
    }
    out = tmp_path_factory.mktemp("report")
    doc["input"]["path"] = demo_path
    doc["output"]["path"] = str(out / "out")
    spec = out / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert cli.main(["run", str(spec), "--release-id", "r1", "--master", "local[1]"]) == 0
    return out / "out" / "r1"


def test_the_page_states_the_release_and_needs_no_network(release: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    assert cli.main(["report", str(release), "--output", str(page)]) == 0
    text = page.read_text()
    for words in (
        "county_levels",
        "persons_by_county",
        "Budget",
        "Private partition selection",
        "Consistency across levels",
        "What this release protects",
    ):
        assert words in text, words
    assert len(re.findall(r"<div id=\"chart-\d+\"", text)) >= 5
    # self-contained: no script, style or image fetched from anywhere
    assert not re.search(r"<(script|img|iframe)[^>]+src=", text)
    assert "<link" not in text
    # the levels add up in the released files: every difference is 0
    assert re.findall(r"<td class='(ok|bad)'>", text) and "class='bad'" not in text


def test_a_tampered_level_shows_as_not_adding_up(release: Path, tmp_path: Path) -> None:
    """Control for the consistency check: one released county changed by one person."""
    copy = tmp_path / "r1"
    shutil.copytree(release, copy)
    finest = copy / "county_levels"
    table = pq.read_table(finest)
    counts = table.column("privacy_unit_count").to_pylist()
    counts[0] += 1
    index = table.column_names.index("privacy_unit_count")
    changed = table.set_column(
        index, "privacy_unit_count", pa.array(counts, table.schema.field(index).type)
    )
    shutil.rmtree(finest)
    finest.mkdir()
    pq.write_table(changed, finest / "part-0.parquet")
    assert "class='bad'>1<" in build_report(copy)


def test_a_directory_without_a_manifest_is_refused_with_exit_3(tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["report", str(tmp_path)]) == 3
    assert "holds no manifest.json" in capsys.readouterr().err


def _facts_and_figures(page: str) -> list[str]:
    """What a page states: its text cells, and its charts' data (ids aside)."""
    return re.findall(r"<td[^>]*>[^<]*</td>|\"[xy]\":\[[^\]]*\]", page)


def test_a_release_at_a_uri_is_read_through_spark(
    spark: Any, release: Path, tmp_path: Path, capsys: Any
) -> None:
    local = build_report(release)
    remote = build_report(release.as_uri(), spark)  # file://: the Hadoop filesystem path
    assert _facts_and_figures(remote) == _facts_and_figures(local)
    assert len(_facts_and_figures(local)) > 50
    page = tmp_path / "page.html"
    uri = ["report", release.as_uri(), "--output", str(page), "--master", "local[1]"]
    assert cli.main(uri) == 0 and "persons_by_county" in page.read_text()
    missing = ["report", (tmp_path / "none").as_uri(), "--master", "local[1]"]
    capsys.readouterr()
    assert cli.main(missing) == 3
    assert "holds no manifest.json" in capsys.readouterr().err


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Chromium is not installed: `make browser` installs it from the distribution")
    return exe


def _render(page: Path, out: Path) -> tuple[str, str]:
    """(DOM after scripts ran, browser log) of ``page`` in headless Chromium."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={out}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    env = {**os.environ, "HOME": str(out)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    return done.stdout, done.stderr


def _errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"CONSOLE.*(Uncaught|Error)", line)]


@pytest.mark.browser
def test_the_page_loads_in_chromium_without_errors_and_draws_its_charts(
    release: Path, tmp_path: Path
) -> None:
    text = build_report(release)
    charts = len(re.findall(r"<div id=\"chart-\d+\"", text))
    page = tmp_path / "page.html"
    page.write_text(text)
    dom, log = _render(page, tmp_path / "profile")
    assert _errors(log) == []
    assert len(re.findall(r"class=\"main-svg\"", dom)) >= charts  # every chart drawn

    # control: the same page without its inlined plotly.js fails both checks
    start = text.index("<script>")
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + text[text.index("</script>", start) + len("</script>") :])
    dom, log = _render(broken, tmp_path / "profile2")
    assert _errors(log) and "main-svg" not in dom
