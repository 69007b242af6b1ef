"""The resume of a benchmark run that was cut off (`run.py --resume`): finished blocks are skipped, the
records of the block that was cut off are dropped and measured again, and a run made with other options,
other programs or on another machine is refused. No process is started: the topology and the load
generator are replaced by fakes."""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run  # noqa: E402
from harness import phases  # noqa: E402


def matrix_args() -> SimpleNamespace:
    return SimpleNamespace(reps=2, transport_list=["tcp"], system_list=["switchyard", "floor"],
                           cells=[(50, 1024), (200, 1024)], client_list=["switchyard"], run_secs=1.0,
                           run_requests=None)


class Cut(KeyboardInterrupt):
    """The run is cut off (Ctrl-C, a session that ends)."""


class Load:
    """Stands in for the load generator: one record per measured run, and a cut-off after `cut_after` runs."""

    def __init__(self, cut_after: int | None = None):
        self.calls, self.cut_after = [], cut_after

    def measure(self, topo, infra, client, conns, payload, args, **kw):
        if self.cut_after is not None and len(self.calls) == self.cut_after:
            raise Cut()
        self.calls.append((topo.system, conns))
        return {"system": topo.system, "transport": topo.transport, "client": client, "connections": conns,
                "payload_bytes": payload, "failed": False, "report": {"tps": 1.0}}


def fake_topology(system, transport, ports, logdir, args, infra, body):
    return body(SimpleNamespace(system=system, transport=transport))


def run_matrix(results: dict, load: Load) -> None:
    with mock.patch.object(phases, "measure", load.measure), \
            mock.patch.object(phases, "with_topology", fake_topology), \
            mock.patch.object(phases, "describe", lambda rec: ""), \
            mock.patch.object(phases, "log", lambda msg: None):
        phases.matrix(matrix_args(), None, None, None, results, lambda: None)


class ResumeTest(unittest.TestCase):
    def test_a_cut_off_matrix_goes_on_where_it_stopped(self):
        results = {"runs": [], "idle": []}
        # 2 reps x 2 systems = 4 blocks of 2 cells; cut off in the middle of the third block.
        with self.assertRaises(Cut):
            run_matrix(results, Load(cut_after=5))
        self.assertEqual(results["done"], ["matrix/0/tcp/switchyard", "matrix/0/tcp/floor"])
        self.assertEqual(len(results["runs"]), 5, "the cut-off block's first run was recorded")
        self.assertEqual(phases.drop_unfinished(results), 1)
        self.assertEqual(len(results["runs"]), 4)

        load = Load()
        run_matrix(results, load)
        self.assertEqual(len(load.calls), 4, f"only the two unfinished blocks are measured: {load.calls}")
        self.assertEqual(len(results["done"]), 4)
        per_block = {}
        for rec in results["runs"]:
            per_block.setdefault(rec["block"], []).append(rec["connections"])
        self.assertEqual({k: sorted(v) for k, v in per_block.items()},
                         {f"matrix/{rep}/tcp/{s}": [50, 200] for rep in (0, 1) for s in ("switchyard", "floor")})

    def test_a_finished_run_measures_nothing_again(self):
        results = {"runs": [], "idle": []}
        run_matrix(results, Load())
        self.assertEqual(len(results["runs"]), 8)
        self.assertFalse(any(rec["failed"] for rec in results["runs"]))
        load = Load()
        run_matrix(results, load)
        self.assertEqual(load.calls, [])
        self.assertEqual(len(results["runs"]), 8)

    def meta(self, **config) -> dict:
        return {"format": 2, "mode": "full", "started": "2026-12-04 19:00:00 +0000", "command": "bench/run.py",
                "machine": {"cores": 2}, "versions": {"switchyard commit": "abc1234", "rustc": "1.95"},
                "programs": {"target/release/switchyard": "5e1f"}, "config": {"reps": 6, **config}}

    def resumed(self, old: dict, new: dict) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "full.json"
            path.write_text(json.dumps(old))
            with mock.patch.object(run, "log", lambda msg: None):
                return run.resumed(str(path), new)

    def test_resume_refuses_a_run_with_other_options_commit_or_machine(self):
        old = {"meta": self.meta(), "runs": [], "idle": [], "done": []}
        for change, named in [({"config": {"reps": 3}}, "config"),
                              ({"programs": {"target/release/switchyard": "b0b0"}}, "programs"),
                              ({"versions": {"switchyard commit": "abc1234", "rustc": "1.96"}}, "versions[rustc]"),
                              ({"machine": {"cores": 4}}, "machine")]:
            new = {**self.meta(), **change}
            with self.assertRaises(SystemExit) as refused:
                self.resumed(old, new)
            self.assertIn(named, str(refused.exception))

    def test_resume_keeps_the_finished_records_and_the_first_segment(self):
        old_meta = {**self.meta(), "finished": "2026-12-04 20:00:00 +0000"}
        old = {"meta": old_meta, "done": ["idle/0/switchyard/tcp"],
               "runs": [], "idle": [{"block": "idle/0/switchyard/tcp"}, {"block": "idle/0/switchyard/ws"}]}
        # Another commit building the same programs (a docs change) may go on; the new run's options hold
        # tuples where the file has lists.
        new = {**self.meta(cell=(200, 1024)), "versions": {"switchyard commit": "fedcba9", "rustc": "1.95"}}
        old["meta"]["config"]["cell"] = [200, 1024]
        results = self.resumed(old, new)
        self.assertEqual(results["idle"], [{"block": "idle/0/switchyard/tcp"}])
        self.assertEqual(results["meta"]["segments"], [
            {"started": "2026-12-04 19:00:00 +0000", "finished": "2026-12-04 20:00:00 +0000",
             "command": "bench/run.py", "commit": "abc1234"}])


if __name__ == "__main__":
    unittest.main()
