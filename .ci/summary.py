"""Print one line per test tier and host from pytest JUnit XML reports; fail on failures or host-tier skips.

Usage: python .ci/summary.py [--host-skips-fail] LABEL=REPORT.xml [LABEL=REPORT.xml ...]

Tiers by test path: tests/core and tests/evaluation -> core (host-free), tests/browser -> browser, the server tests of tests/host (SERVER_TESTS) -> e2e,
other tests/host -> node.
With --host-skips-fail a skipped node, e2e or browser test is a failure (CI has the hosts: a skip is not a pass).
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


SERVER_TESTS = ("test_e2e", "test_bad_inputs", "test_interrupt", "test_run_workflow", "test_coherence_bench")


def tier(case: ET.Element) -> str:
    name = (case.get("classname") or "") + "." + (case.get("file") or "")
    if any(t in name for t in ("tests.core", "tests/core", "tests.evaluation", "tests/evaluation")):
        return "core"
    if "tests.browser" in name or "tests/browser" in name:
        return "browser"
    return "e2e" if any(t in name for t in SERVER_TESTS) else "node"


def outcome(case: ET.Element) -> str:
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return "failed" if tag in ("failure", "error") else "skipped"
    return "passed"


def main(argv: list[str]) -> int:
    strict = "--host-skips-fail" in argv
    bad = False
    for arg in (a for a in argv if not a.startswith("--")):
        label, path = arg.split("=", 1)
        try:
            cases = ET.parse(path).getroot().iter("testcase")
        except (OSError, ET.ParseError) as e:
            print(f"CI summary: {label}: no report ({e})")
            bad = True
            continue
        counts: dict[str, Counter] = {}
        for case in cases:
            counts.setdefault(tier(case), Counter())[outcome(case)] += 1
        for name in ("core", "node", "e2e", "browser"):
            if name not in counts:
                continue
            c = counts[name]
            print(f"CI tier {name:<7} host {label:<13}: {c['passed']:4d} passed, {c['skipped']:3d} skipped, {c['failed']:3d} failed")
            bad |= c["failed"] > 0 or (strict and name != "core" and c["skipped"] > 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
