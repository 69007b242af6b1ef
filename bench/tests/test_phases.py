"""The measuring phases' bookkeeping, with fakes for the topology and the load generator (no process is
started): each phase's blocks record their runs under their keys, and a topology that does not start is
recorded as a failed run of its phase (never part of a median) while the run goes on."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import phases  # noqa: E402


def args() -> SimpleNamespace:
    return SimpleNamespace(reps=1, transport_list=["tcp"], system_list=["switchyard", "due-v2.5.8"],
                           cells=[(50, 1024)], client_list=["switchyard"], run_secs=1.0, run_requests=None,
                           open_cell=(200, 1024), open_fractions=[0.25, 0.5], open_reps=1, open_secs=1.0,
                           open_pipeline=64, due_versions=["v2.5.8"], eff_cell=(200, 1024), eff_reps=1, eff_secs=1.0)


def measure(topo, infra, client, conns, payload, args, **kw):
    return {"system": topo.system, "transport": topo.transport, "client": client, "connections": conns,
            "payload_bytes": payload, "offered_rate": kw.get("rate"), "pinned": kw.get("pin", False),
            "failed": False, "report": {"tps": 1000.0}}


def topology_failing_for(broken: str):
    def with_topology(system, transport, ports, logdir, args, infra, body):
        if system == broken:
            raise RuntimeError(f"{system} exited early")
        return body(SimpleNamespace(system=system, transport=transport, procs=lambda: []))
    return with_topology


def run_phase(name: str, results: dict, broken: str = "") -> dict:
    with mock.patch.object(phases, "measure", measure), \
            mock.patch.object(phases, "with_topology", topology_failing_for(broken)), \
            mock.patch.object(phases, "describe", lambda rec: ""), \
            mock.patch.object(phases, "log", lambda msg: None), \
            mock.patch.object(phases.procfs, "perf_works", lambda: False):
        getattr(phases, name)(args(), None, None, None, results, lambda: None)
    return results


def fresh() -> dict:
    return {"meta": {}, "runs": [], "idle": []}


class Phases(unittest.TestCase):
    def test_a_topology_that_does_not_start_is_a_failed_run_of_its_phase_and_the_run_goes_on(self):
        for phase, name in (("matrix", "matrix"), ("open", "open_loop"), ("efficiency", "efficiency")):
            with self.subTest(phase=phase):
                results = fresh()
                if phase == "open":  # due's maximum, from the matrix
                    results["runs"] = run_phase("matrix", fresh())["runs"]
                    results["done"] = []
                before = len(results["runs"])
                run_phase(name, results, broken="switchyard")
                runs = results["runs"][before:]
                failed = [r for r in runs if r["failed"]]
                self.assertTrue(failed, f"{phase}: the broken topology left no failed run")
                for r in failed:
                    self.assertEqual((r["phase"], r["system"], r["transport"], r["rep"]),
                                     (phase, "switchyard", "tcp", 0))
                    self.assertIn("exited early", r["error"])
                    self.assertIn(r["block"], results["done"])
                if phase == "efficiency":
                    self.assertEqual(sorted(r["pinned"] for r in failed), [False, True])
                ok = [r for r in runs if not r["failed"]]
                self.assertTrue(ok and all(r["system"] == "due-v2.5.8" for r in ok),
                                f"{phase}: the other system was still measured")

    def test_open_loop_offers_fractions_of_the_anchor_dues_matrix_maximum(self):
        results = run_phase("matrix", fresh())
        base = len(results["runs"])
        run_phase("open_loop", results)
        runs = results["runs"][base:]
        self.assertEqual(sorted({(r["system"], r["fraction"], r["offered_rate"]) for r in runs}),
                         [(s, f, 1000.0 * f) for s in ("due-v2.5.8", "switchyard") for f in (0.25, 0.5)])
        self.assertEqual(results["open_loop_max"]["tcp"]["rates"], [250, 500])
        self.assertTrue(all(r["block"] == f"open/tcp/0/{r['system']}" for r in runs))


if __name__ == "__main__":
    unittest.main()
