"""The project's code as one zip archive, for the Python workers of a cluster: ``spark-submit
--py-files`` (``dprelease package``) or, on Spark Connect, an artifact of the session.

A release runs code of its own in Spark's Python workers (the noise and cell identities, in
``mapInArrow`` and UDFs), so they need ``dp_ops``, ``pipelines`` and ``jobs`` beside the runtime
dependencies (numpy, pyarrow, pandas, cryptography).
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pipelines.spark_compat import is_connect

log = logging.getLogger("dprelease")
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dp_ops", "pipelines", "jobs")
_shipped: dict[int, str] = {}
"""Connect sessions (by id) and the archive digest each was given."""


def archive_bytes() -> bytes:
    """The zip of the packages' Python files (scheduler examples left out), byte for byte the
    same for the same code (fixed timestamps, sorted names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for pkg in PACKAGES:
            for f in sorted((ROOT / pkg).rglob("*.py")):
                relative = f.relative_to(ROOT)
                if "examples" in relative.parts:  # scheduler files, not code
                    continue
                info = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                z.writestr(info, f.read_bytes())
    return buffer.getvalue()


def write_archive(out: Path) -> Path:
    """Write the archive to ``out`` (parents created) and return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(archive_bytes())
    return out


def ship_to_connect(spark: Any) -> None:
    """On a Spark Connect session, add the archive as a Python artifact (once per session; its
    name carries its digest, so a changed checkout is a new artifact). Nothing on a classic
    session, whose workers take ``--py-files`` or an installed package."""
    if not is_connect(spark):
        return
    data = archive_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    if _shipped.get(id(spark)) == digest:
        return
    with tempfile.TemporaryDirectory(prefix="dprelease-artifact-") as tmp:
        path = Path(tmp) / f"dprelease-{digest}.zip"
        path.write_bytes(data)
        spark.addArtifacts(str(path), pyfile=True)
    _shipped[id(spark)] = digest
    log.debug("spark connect: code sent to the session as artifact dprelease-%s.zip", digest)
