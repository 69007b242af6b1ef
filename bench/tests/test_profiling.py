"""bench/profiling.py's pure parts: the cell grammar and its folder names, the context-switch count it
reads from /proc, and the table row it prints. The profiling itself needs perf and a quiet machine; it
runs as `bench/profile.sh` (bench/analysis.md quotes its output)."""

from __future__ import annotations

import os
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import profiling  # noqa: E402


class CellGrammar(unittest.TestCase):
    def test_a_cell_names_transport_client_connections_and_letters(self):
        cell = profiling.Cell.parse(" ws/due/1000@2048 ")
        self.assertEqual(cell, profiling.Cell("ws", "due", 1000, 2048))
        self.assertEqual(cell.label("switchyard"), "switchyard-ws-due-1000-2048")

    def test_malformed_cells_are_refused_with_the_grammar(self):
        for text in ("tcp/due/1000", "tcp/due@1000", "udp/due/10@1024", "tcp/wrk/10@1024", "tcp/due/0@1024",
                     "tcp/due/x@1024", "tcp/due/10@1024/extra"):
            with self.subTest(text=text), self.assertRaises(ValueError) as refused:
                profiling.Cell.parse(text)
            self.assertIn(text, str(refused.exception))

    def test_the_command_line_refuses_a_bad_cell(self):
        with self.assertRaises(SystemExit), open(os.devnull, "w") as quiet:
            stderr, sys.stderr = sys.stderr, quiet
            try:
                profiling.parse_args(["--cells", "tcp/switchyard/1000@1024,ws/nobody/1@1"])
            finally:
                sys.stderr = stderr


class Readings(unittest.TestCase):
    def test_context_switches_of_a_live_process_grow(self):
        before = profiling.thread_switches(os.getpid())
        os.sched_yield()
        time.sleep(0.01)  # sleeping is a voluntary switch
        self.assertGreater(profiling.thread_switches(os.getpid()), before)

    def test_the_table_row_shows_both_sides_and_a_dash_for_a_missing_one(self):
        row = profiling.table_row({"system": "direct", "transport": "tcp", "client": "switchyard",
                                   "connections": 1000, "payload_bytes": 1024, "tps": 123456,
                                   "gate_cpu_us_per_request": 2.5, "gate_switches_per_request": 0.125})
        self.assertEqual(row, "| direct | tcp | switchyard | 1,000 | 1024 | 123,456 | 2.5 / – | 0.125 / – |")
        self.assertEqual(row.count("|"), profiling.TABLE_HEAD.splitlines()[0].count("|"))


if __name__ == "__main__":
    unittest.main()
