"""bench/report.py's goal judgement: the conservative bound (our worst repetition against their best) and
the paired bound (the worst of the per-repetition ratios), and which of them are shown as missed."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import report  # noqa: E402
from harness.stats import conservative_ratio, paired_ratio  # noqa: E402


def run(system, rep, tps, cpu_s=1.0):
    """One finished matrix run of 10 s at `tps`, gate and node each using `cpu_s` of CPU."""
    ok = tps * 10
    return {"phase": "matrix", "rep": rep, "system": system, "transport": "tcp", "client": "switchyard",
            "connections": 50, "payload_bytes": 1024, "report": {"tps": tps, "requests_ok": ok, "latency_us": {}},
            "gate_cpu_s": cpu_s, "node_cpu_s": cpu_s, "client_cpu_s": 1.0, "wall_secs": 10,
            "gate_peak_rss_kb": 1024, "node_peak_rss_kb": 1024}


class Bounds(unittest.TestCase):
    def test_the_paired_bound_takes_the_worst_repetition_ratio_over_repetitions_both_finished(self):
        ours, theirs = {0: 100.0, 1: 200.0, 2: 300.0}, {0: 40.0, 1: 90.0}
        self.assertAlmostEqual(paired_ratio(ours, theirs), 200 / 90)
        self.assertAlmostEqual(paired_ratio(ours, theirs, higher_is_better=False), 100 / 40)
        self.assertIsNone(paired_ratio({0: 1.0}, {1: 1.0}))
        self.assertAlmostEqual(conservative_ratio(list(ours.values()), list(theirs.values())), 100 / 90)

    def test_a_drift_between_repetitions_misses_on_the_conservative_bound_and_passes_on_the_paired_one(self):
        runs = [run("switchyard", 0, 100.0), run("switchyard", 1, 200.0), run("due-v2.5.8", 0, 40.0, cpu_s=5.0),
                run("due-v2.5.8", 1, 90.0, cpu_s=5.0), run("floor", 0, 110.0), run("floor", 1, 230.0),
                dict(run("switchyard", 2, 1.0), failed=True)]
        results = {"meta": {"mode": "full", "config": {
            "systems": ["switchyard", "due-v2.5.8", "floor"], "transports": ["tcp"], "clients": ["switchyard"],
            "cells": [{"connections": 50, "payload_bytes": 1024}], "open_cell": [50, 1024], "open_fractions": []}},
            "runs": runs}
        table = report.goal_tables(report.group_by_rep(runs, "matrix"), results, {}, full=True)
        cell = next(line for line in table if line.startswith("| TCP | `switchyard bench` | 50 |"))
        # TPS: worst 100 against best 90 misses 2×; per repetition 2.5× and 2.22× both pass
        self.assertIn("| **1.11×** / 2.22× |", cell)
        # CPU per request (gate + node): ours 2 s per 1,000 or 2,000 requests, theirs 10 s per 400 or 900;
        # conservative: our highest against their lowest; paired: the higher of 0.08× and 0.09×
        self.assertIn(f"| {(2 / 1000) / (10 / 900):.2f}× / {(2 / 2000) / (10 / 900):.2f}× |", cell)
        # floor: worst 100 against best 230 misses 0.8; per repetition 0.91 and 0.87 pass
        self.assertIn("| **0.43×** / 0.87× |", cell)
        # the floor against due, per repetition: TPS 110/40 and 230/90 (worst 2.56×); CPU 0.08× and 0.09×
        self.assertTrue(cell.endswith(f"| 2.56× / {(2 / 2300) / (10 / 900):.2f}× |"), cell)
        worst = next(line for line in table if line.startswith("| TCP | `switchyard bench` | **1.11×**"))
        self.assertTrue(worst.endswith("| no |"), worst)


if __name__ == "__main__":
    unittest.main()
