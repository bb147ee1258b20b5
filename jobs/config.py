"""Loading a release spec from YAML, with command-line overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from dp_ops.errors import SpecError
from pipelines.spec import ReleaseSpec, parse_spec


def load_document(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"spec: cannot read {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(
            f"spec: {str(path)!r} is not UTF-8 text; give the YAML release spec"
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec: {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"spec: {str(path)!r} must hold a mapping (input, budget, output, tables)")
    return doc


def load_spec(
    path: str | Path,
    input_path: str | None = None,
    output_path: str | None = None,
    ledger_path: str | None = None,
) -> ReleaseSpec:
    """Parse the YAML spec at ``path``; the other arguments override the spec's paths."""
    spec = parse_spec(load_document(path))
    if ledger_path:
        if spec.ledger is None:
            raise SpecError("--ledger needs a 'ledger: {dataset: ...}' section in the spec")
        spec = dataclasses.replace(spec, ledger=dataclasses.replace(spec.ledger, path=ledger_path))
    if input_path:  # files instead of whatever the spec names
        source = dataclasses.replace(spec.input, path=input_path, table=None)
        spec = dataclasses.replace(spec, input=source)
    if output_path:
        spec = dataclasses.replace(spec, output=dataclasses.replace(spec.output, path=output_path))
    return spec


def spec_hash(spec: ReleaseSpec) -> str:
    """SHA-256 of the canonical JSON of the effective spec (after overrides).

    Everything that decides what is released counts (input, budget, tables, output path and
    format); the ledger's path does not: it is where the release is recorded, not what it is.
    """
    doc = dataclasses.asdict(spec)
    if doc.get("ledger"):
        doc["ledger"] = {"dataset": doc["ledger"]["dataset"]}
    canonical = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
