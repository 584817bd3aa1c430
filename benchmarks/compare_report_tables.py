"""Compare the tables of two report folders: are the numbers of two versions the same?

Every ``tables/*.csv`` of ``BEFORE`` is read with its namesake in ``AFTER`` and compared on
their common columns (timing columns left out), to a relative tolerance.  Used to check that
a refactoring leaves the report's numbers unchanged at the same seed::

    hw1sk report --profile quick --out before --quiet     # one version of the code
    hw1sk report --profile quick --out after --quiet      # the other
    python benchmarks/compare_report_tables.py before after
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

TIMING = ("dur", "fit_time", "wall_time")


def compare(before, after, rtol=1e-12):
    """``(name, status, detail)`` per table of ``before``: "same", "differs" or "missing"."""
    rows = []
    for path in sorted(Path(before, "tables").glob("*.csv")):
        other = Path(after, "tables", path.name)
        if not other.exists():
            rows.append((path.name, "missing", ""))
            continue
        a, b = pd.read_csv(path), pd.read_csv(other)
        a = a.drop(columns=[c for c in TIMING if c in a])
        b = b.drop(columns=[c for c in TIMING if c in b])
        common = [c for c in a.columns if c in b.columns]
        extra = sorted(set(a.columns) ^ set(b.columns))
        try:
            pd.testing.assert_frame_equal(a[common], b[common], check_exact=False, rtol=rtol)
            rows.append((path.name, "same", f"columns only in one: {extra}" if extra else ""))
        except AssertionError as exc:
            rows.append((path.name, "differs", " ".join(str(exc).split())[:200]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rtol", type=float, default=1e-12)
    args = parser.parse_args(argv)
    rows = compare(args.before, args.after, args.rtol)
    for name, status, detail in rows:
        print(f"{status:8s} {name} {detail}")
    return 0 if all(status == "same" for _, status, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
