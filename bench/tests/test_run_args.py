"""bench/run.py's choice of where its report goes: only the whole full specification replaces the published
BENCHMARKS.md; a subset of it writes next to its results, a quick run under bench/results/quick/."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run  # noqa: E402

OUT = Path("/tmp/results/full-20261205-024511.json")


class ReportDefault(unittest.TestCase):
    def test_the_whole_full_specification_writes_the_published_report(self):
        self.assertEqual(run.report_default(run.parse_args([]), OUT), run.ROOT / "BENCHMARKS.md")
        self.assertEqual(run.report_default(run.parse_args(["--due-src", "/x.tar.gz", "--run-secs", "30"]), OUT),
                         run.ROOT / "BENCHMARKS.md")

    def test_a_subset_writes_next_to_its_results(self):
        for argv in (["--phases", "scale"], ["--systems", "switchyard,switchyard-mtls"], ["--clients", "switchyard"],
                     ["--transports", "tcp"], ["--due-versions", "v2.5.8"]):
            with self.subTest(argv=argv):
                self.assertEqual(run.report_default(run.parse_args(argv), OUT),
                                 Path("/tmp/results/full-20261205-024511/BENCHMARKS.md"))

    def test_a_quick_run_writes_under_results_quick(self):
        self.assertEqual(run.report_default(run.parse_args(["--quick"]), OUT),
                         run.HERE / "results" / "quick" / "BENCHMARKS.md")


if __name__ == "__main__":
    unittest.main()
