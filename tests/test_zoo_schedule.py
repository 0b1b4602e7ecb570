"""Training the zoo on several cores: dependency order, the pool, and the wall-time plan (checked by hand)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from savl import zoo_schedule


def test_plan_matches_hand_schedules():
    # Longest ready first on 2 workers: a | b then c (t=2..4), d (t=3..4): 4 units.
    assert zoo_schedule.plan({"a": 3, "b": 2, "c": 2, "d": 1}, {}, jobs=2) == 4
    assert zoo_schedule.plan({"a": 3, "b": 2, "c": 2, "d": 1}, {}, jobs=1) == 8
    # b needs a: nothing can overlap them, whatever the workers.
    assert zoo_schedule.plan({"a": 3, "b": 2}, {"b": {"a"}}, jobs=2) == 5
    # d needs a: a | b, then c at 2, d at 3 (after a) on the worker a frees: 3 + 4 = 7.
    assert zoo_schedule.plan({"a": 3, "b": 2, "c": 5, "d": 4}, {"d": {"a"}}, jobs=2) == 7
    # An entry needing one that is not being trained (already shipped) does not wait.
    assert zoo_schedule.plan({"b": 2}, {"b": {"a"}}, jobs=2) == 2


def test_order_puts_each_entry_after_what_it_needs():
    got = zoo_schedule.order(["c", "b", "a"], {"c": {"b"}, "b": {"a"}})
    assert got == ["a", "b", "c"]
    assert zoo_schedule.order(["x", "y"], {}) == ["x", "y"]
    with pytest.raises(ValueError, match="wait for each other"):
        zoo_schedule.order(["a", "b"], {"a": {"b"}, "b": {"a"}})


def test_shipped_zoo_dependencies():
    deps = zoo_schedule.dependencies(["rrdbsft-code-s0", "hat-cmp-s0", "savl-rep-s0"])
    assert deps == {"rrdbsft-code-s0": {"savl-rep-s0"}, "hat-cmp-s0": set(), "savl-rep-s0": set()}


def _fake_build(name, root, runs):
    """Stands in for savl.zoo.build in the worker processes: records when it ran."""
    start = time.time()
    time.sleep(0.3)
    record = {"name": name, "start": start, "end": time.time(), "pid": os.getpid(),
              "threads": os.environ.get("OMP_NUM_THREADS")}
    Path(runs, f"{name}.json").write_text(json.dumps(record))
    return {"held_out_metrics": {}}


def test_train_parallel_respects_dependencies(tmp_path):
    seen = []
    zoo_schedule.train_parallel(["a", "b", "c"], jobs=2, runs=str(tmp_path), deps={"b": {"a"}},
                                build=_fake_build, on_done=lambda n, card: seen.append(n), costs={})
    rec = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc"}
    assert sorted(seen) == ["a", "b", "c"]
    assert rec["b"]["start"] >= rec["a"]["end"]
    assert {r["threads"] for r in rec.values()} == {"1"}
    assert len({r["pid"] for r in rec.values()}) <= 2


def test_train_parallel_starts_the_longest_ready_entry_first(tmp_path):
    """On one worker the entries run longest first, except that an entry waits for the one it needs."""
    zoo_schedule.train_parallel(["a", "b", "c", "d"], jobs=1, runs=str(tmp_path), deps={"d": {"a"}},
                                build=_fake_build, costs={"a": 1.0, "b": 5.0, "c": 3.0, "d": 9.0})
    start = {n: json.loads((tmp_path / f"{n}.json").read_text())["start"] for n in "abcd"}
    assert sorted(start, key=start.get) == ["b", "c", "a", "d"]


def test_estimated_costs_rank_the_shipped_zoo():
    """From the shipped logs, DACESR (2,000 REE + 1,000 selective-scan steps) is the costliest cpu entry and a
    stage-2 DA-RHAG (250 joint + 750 steps) costs more than plain HAT's 1,000 steps; a representation model's
    1,000 steps cost less than either."""
    from savl import zoo

    cpu = [n for n, e in zoo.entries().items() if e.tier == "cpu" and zoo.is_present(n)]
    costs = zoo_schedule.estimated_costs(cpu)
    assert max(costs, key=costs.get) == "dacesr-cmp-s0"
    assert costs["darhag-cmp-s0"] > costs["hat-cmp-s0"] > costs["savl-rep-s0"]


def test_jobs_below_one_is_a_one_line_error():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "savl.cli", "models", "train", "--jobs", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--jobs 0" in out.stderr
