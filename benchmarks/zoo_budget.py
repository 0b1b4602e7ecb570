"""What `make models` costs: each zoo entry's training time, and the whole zoo's wall time on 1 and N workers.

    python benchmarks/zoo_budget.py [--runs runs/zoo] [--jobs 2] [--out benchmarks/results]

For each entry of models/zoo.yaml it finds the finished runs of its chain (the entry's config and every
`init_from` stage before it) under --runs, matched by config hash as `savl models train` finds them, and sums
from their logs (metrics.jsonl) the training steps' wall time and the training thread's CPU time (validation and
packaging excluded). Entries whose runs are not on this machine fall back to the model's shipped log
(metrics.jsonl: the last stage only). The zoo's models train at one thread each, so the CPU time is close to what
each takes on an idle core, while the wall time carries the load the machine had when it trained. The totals on N
workers come from `savl.zoo_schedule.plan` (longest ready entry first, an entry after the ones it starts from).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from types import SimpleNamespace


def _times(run) -> tuple[float, float, int]:
    wall = cpu = 0.0
    last = 0
    for r in run.metrics:
        if "step" in r and "s_per_step" in r:
            n = r["step"] - last
            wall += r["s_per_step"] * n
            cpu += r.get("cpu_s_per_step", r["s_per_step"]) * n
            last = r["step"]
    return wall, cpu, last


# What must agree for a run trained under an older version of the config schema (whose hash has changed since,
# as keys with defaults were added) to count as this entry's run.
_SAME = ("stage", "profile", "seed", "batch", "model", "schedule", "losses")


def _agree(want, got) -> bool:
    """Equal, where a key the older config lacks counts as unset (None)."""
    if isinstance(want, dict):
        got = got or {}
        return all(want.get(i) == got.get(i) for i in set(want) | set(got))
    return want == got


def _loose_match(cfg, runs: Path):
    """A finished run under `runs` whose recorded config agrees with `cfg` on _SAME (None if none or several)."""
    import yaml

    from savl.train.run import Run

    want = cfg.to_dict()
    hits = []
    for d in sorted(runs.glob(f"{cfg.stage}-{cfg.profile}-*")):
        r = Run(d)
        if not (r.finished and (d / "config.yaml").is_file()):
            continue
        got = yaml.safe_load((d / "config.yaml").read_text())
        same = all(_agree(want[k], got.get(k)) for k in _SAME)
        if same:
            hits.append(r)
    return hits[0] if len(hits) == 1 else None


def entry_cost(e, runs: Path) -> dict:
    """Wall and CPU seconds of every stage of the entry's chain, from the runs' logs."""
    from savl.train.config import init_config
    from savl.train.run import find_run

    cfg = e.train_config().model_copy(update={"output": str(runs)})
    stages = []
    while cfg is not None:
        run = find_run(cfg) or _loose_match(cfg, runs)
        if run is None:
            return {}
        wall, cpu, steps = _times(run)
        stages.append({"stage": cfg.stage, "run": run.path.name, "steps": steps, "wall_s": wall, "cpu_s": cpu})
        cfg = init_config(cfg)
    return {"stages": stages[::-1], "wall_s": sum(s["wall_s"] for s in stages),
            "cpu_s": sum(s["cpu_s"] for s in stages)}


def main(argv=None) -> None:
    from savl import zoo, zoo_schedule
    from savl.provenance import git_commit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(zoo.runs_root()))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    entries = zoo.entries()
    rows = []
    for name, e in entries.items():
        card = zoo.read_card(name)
        cost = entry_cost(e, Path(args.runs))
        if not cost and card is None:
            rows.append({"name": name, "trained": False})
            continue
        if not cost:  # the shipped log of the last stage
            log = zoo.model_dir(name) / "metrics.jsonl"
            metrics = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            w, c, steps = _times(SimpleNamespace(metrics=metrics))
            cost = {"wall_s": w, "cpu_s": c, "stages": [{"stage": card["config"]["stage"], "steps": steps}],
                    "from": "shipped log (last stage only)"}
        rows.append({"name": name, "trained": card is not None, "tier": e.tier, **cost})
    timed = [r for r in rows if "wall_s" in r]
    deps = zoo_schedule.dependencies([r["name"] for r in timed])
    cpu = {r["name"]: r["cpu_s"] if r["cpu_s"] is not None else r["wall_s"] for r in timed}
    wall = {r["name"]: r["wall_s"] for r in timed}
    summary = {
        "commit": git_commit(),
        "entries_timed": len(timed),
        "entries_not_trained": [r["name"] for r in rows if "wall_s" not in r],
        "jobs": args.jobs,
        "cpu_s_total": sum(cpu.values()),
        "wall_s_total_as_trained": sum(wall.values()),
        "plan_cpu_s_1_worker": zoo_schedule.plan(cpu, deps, 1),
        f"plan_cpu_s_{args.jobs}_workers": zoo_schedule.plan(cpu, deps, args.jobs),
        f"plan_wall_s_{args.jobs}_workers_as_trained": zoo_schedule.plan(wall, deps, args.jobs),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo_budget.json").write_text(json.dumps({"summary": summary, "entries": rows}, indent=1) + "\n")

    def m(s):
        return "-" if s is None else f"{s / 60:.1f}"

    lines = [
        "# The model zoo's training budget",
        "",
        f"Written by `python benchmarks/zoo_budget.py` at commit {summary['commit'][:10]}. Per entry: the training "
        "steps of every stage of its chain (validation and packaging excluded), from the runs' logs. CPU minutes "
        "are the training thread's CPU time (each zoo model trains at one thread, so this is about its time on an "
        "idle core); wall minutes are as trained, on the 2-core development machine while other work ran "
        "(load averages of 2-14), so they overstate an idle machine's time.",
        "",
        f"- Entries timed: {summary['entries_timed']}; listed but not trained: "
        f"{', '.join(summary['entries_not_trained']) or 'none'}.",
        f"- Whole zoo, CPU time: {m(summary['cpu_s_total'])} min; on 1 worker (`--jobs 1`) "
        f"{m(summary['plan_cpu_s_1_worker'])} min, on {args.jobs} workers (`make models` on {args.jobs} cores) "
        f"{m(summary[f'plan_cpu_s_{args.jobs}_workers'])} min of idle-core time.",
        f"- The same {args.jobs}-worker schedule with the wall times as trained (under load): "
        f"{m(summary[f'plan_wall_s_{args.jobs}_workers_as_trained'])} min.",
        "",
        "| entry | tier | stages (steps) | CPU min | wall min as trained |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        if "wall_s" not in r:
            lines.append(f"| {r['name']} | - | not trained | - | - |")
            continue
        st = " + ".join(f"{s['stage']} ({s['steps']})" for s in r["stages"])
        if "from" in r:
            st += f", {r['from']}"
        lines.append(f"| {r['name']} | {r['tier']} | {st} | {m(r['cpu_s'])} | {m(r['wall_s'])} |")
    (out / "zoo_budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
