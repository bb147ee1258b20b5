"""spark-submit entry point: ``spark-submit jobs/release.py --config conf/demo.yaml [...]``.

Takes the options of ``dprelease run`` (``--input``, ``--output``, ``--release-id``, ...). Ship
the code with ``--py-files dist/dprelease-pyfiles.zip`` (from ``dprelease package``) when the
package is not installed on the driver and executors.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from jobs.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
