"""The test suite's time per folder, from a pytest JUnit XML report.

    make test PYTEST_ARGS=--junitxml=suite.xml
    python bench/suite_times.py suite.xml

Prints one row per test folder (tests, seconds, share of the total), slowest first:
the table kept in bench/RESULTS.md ("Test suite"). Setup of module/session fixtures is
counted in the first test that needs them, as pytest reports it.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import defaultdict


def folder_of(classname: str) -> str:
    """``tests.training.test_recipes`` -> ``tests/training``; a test file at the root -> ``tests``."""
    parts = classname.split(".")
    modules = [p for p in parts if not p[:1].isupper()]  # drop a test class name
    return "/".join(modules[:-1]) or modules[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="JUnit XML written by pytest --junitxml")
    args = parser.parse_args(argv)
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for case in ET.parse(args.report).getroot().iter("testcase"):
        folder = folder_of(case.get("classname", ""))
        seconds[folder] += float(case.get("time", 0.0))
        counts[folder] += 1
    total = sum(seconds.values())
    print(f"| folder | tests | seconds | share |\n|---|---:|---:|---:|")
    for folder in sorted(seconds, key=seconds.get, reverse=True):
        print(f"| {folder} | {counts[folder]} | {seconds[folder]:.0f} | {100 * seconds[folder] / total:.0f}% |")
    print(f"| **total** | {sum(counts.values())} | {total:.0f} ({total / 60:.1f} min) | |")


if __name__ == "__main__":
    main()
