"""Are two studies' records the same? Compares two ``semalign results --json``
outputs record by record, without their provenance (machine, times, code
fingerprint), so a refactor can show it changed no number.

    semalign results --json > before.json      # on the old tree
    semalign results --json > after.json       # on the new tree
    python benchmarks/compare_results.py before.json after.json

Prints how many records each side holds and every record that differs, is
missing or is new (by its identifying keys); exits 1 when any does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

IGNORED = {"provenance", "data_id"}  # what made a record, not what it says (data_id hashes the code's parameters)
MEASURED = ("value", "ci_low", "ci_high", "verdict", "reason")


def read(path: Path) -> dict[tuple, dict]:
    records = json.loads(path.read_text())
    keyed: dict[tuple, dict] = {}
    for record in records:
        kept = {key: value for key, value in record.items() if key not in IGNORED}
        key = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in kept.items() if k not in MEASURED))
        keyed.setdefault(key, kept)
        if keyed[key] is not kept:  # two records with the same identity: keep both, numbered
            keyed[(*key, ("duplicate", str(len(keyed))))] = kept
    return keyed


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = read(args.before), read(args.after)
    print(f"{args.before}: {len(before)} records; {args.after}: {len(after)} records")
    differences = 0
    for key in sorted(set(before) | set(after)):
        label = ", ".join(f"{k}={json.loads(v)}" for k, v in key if json.loads(v) not in (None, ""))
        if key not in after or key not in before:
            differences += 1
            print(f"{'missing from after' if key not in after else 'new in after'}: {label}")
            continue
        changed = {m: (before[key].get(m), after[key].get(m)) for m in MEASURED
                   if not same(before[key].get(m), after[key].get(m))}
        if changed:
            differences += 1
            print(f"differs: {label}: " + "; ".join(f"{m} {old!r} -> {new!r}" for m, (old, new) in changed.items()))
    print("identical in every value, interval and verdict" if not differences else f"{differences} record(s) differ")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
