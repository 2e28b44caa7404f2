#!/usr/bin/env python3
"""Reads kosoku's index.json reports and fails unless every case is OK or INFORMATIONAL.

Usage: check.py EXPECTED_CASES REPORT_DIR [REPORT_DIR ...]

Both `behavior` and `behaviorClose` must be OK or INFORMATIONAL: NON-STRICT, UNIMPLEMENTED,
FAILED and WRONG CODE all fail. Each report must hold exactly EXPECTED_CASES cases, so a case
that silently did not run fails too.
"""

import collections
import json
import pathlib
import sys

PASSING = {"OK", "INFORMATIONAL"}


def main() -> int:
    expected = int(sys.argv[1])
    failed = False
    for directory in sys.argv[2:]:
        index = json.loads((pathlib.Path(directory) / "index.json").read_text())
        for agent, cases in index.items():
            counts = collections.Counter(
                (c["behavior"], c["behaviorClose"]) for c in cases.values()
            )
            summary = ", ".join(f"{b}/{bc}: {n}" for (b, bc), n in sorted(counts.items()))
            print(f"{directory} [{agent}]: {len(cases)} cases; {summary}")
            bad = {
                case: c
                for case, c in cases.items()
                if c["behavior"] not in PASSING or c["behaviorClose"] not in PASSING
            }
            for case, c in sorted(bad.items()):
                print(f"  {case}: behavior={c['behavior']} behaviorClose={c['behaviorClose']}")
            if bad or len(cases) != expected:
                if len(cases) != expected:
                    print(f"  expected {expected} cases, found {len(cases)}")
                failed = True
    print("autobahn: " + ("FAILED" if failed else "all cases OK"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
