"""What `make models` costs: each zoo entry's training time, and the whole zoo's wall time on 1 and N workers.

    python benchmarks/zoo_budget.py [--runs runs/zoo] [--jobs 2] [--out benchmarks/results]
    python benchmarks/zoo_budget.py --measure 60 [--jobs 2] [--out benchmarks/results]

For each entry of models/zoo.yaml it finds the finished runs of its chain (the entry's config and every
`init_from` stage before it) under --runs, matched by config hash as `savl models train` finds them, and sums
from their logs (metrics.jsonl) the training steps' wall time and the training thread's CPU time (validation and
packaging excluded). Entries whose runs are not on this machine fall back to the model's shipped log
(metrics.jsonl: the last stage only). The zoo's models train at one thread each, so the CPU time is close to what
each takes on an idle core, while the wall time carries the load the machine had when it trained. The totals on N
workers come from `savl.zoo_schedule.plan` (longest ready entry first, an entry after the ones it starts from).

With --measure N it times the zoo now instead of reading old logs (run it on an idle machine): every distinct
stage of every entry's chain trains N steps in a fresh process at one thread, --jobs of them at a time as
`make models` runs them (so the figures include what two processes on two cores cost each other), from random
initial weights (a step costs the same whatever the weights), giving its CPU seconds per step (median of the
logged windows), the process's start-up (imports; charged once per entry, as each entry trains in its own
worker) and the run's fixed cost (data set-up, one validation, saving; charged once per validation of the
real stage, so set-up and saving are over-counted and the estimate errs high). Scoring a finished model
for its card is timed once per family of entries (same zoo config) on a shipped model. An entry's estimate is
the sum over its chain, plus its scoring; the totals per tier and on 1 and N workers follow as above. Written
to zoo_budget_measured.{md,json}.
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


def _chain(e) -> list:
    """The entry's stage configs, first stage first."""
    from savl.train.config import init_config

    cfg, out = e.train_config(), []
    while cfg is not None:
        out.append(cfg)
        cfg = init_config(cfg)
    return out[::-1]


def _short(cfg, steps: int, output: Path):
    """`cfg` cut to `steps` steps at one thread: logged every 10 steps, validated once at the end, no checkpoint,
    no learning-rate milestones, random initial weights (init_from dropped), written under `output`."""
    from savl.train.config import validate

    d = cfg.to_dict()
    d.update(output=str(output), init_from=None, log_every=10, val_every=steps, checkpoint_every=10 * steps,
             threads=1)
    d["schedule"] = dict(d["schedule"], iterations=steps, milestones=[])
    return validate(d, "zoo_budget --measure")


def _time_stage(name: str, depth: int, steps: int, output: str) -> None:
    """Child process: train stage `depth` of entry `name`'s chain for `steps` steps; print its timing as JSON."""
    import resource
    import statistics

    import torch

    from savl import zoo
    from savl.train import get_or_train

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    torch.set_num_threads(1)
    cfg = _short(_chain(zoo.entry(name))[depth], steps, Path(output))
    ready = cpu()  # start-up: the imports, once per process
    run = get_or_train(cfg, root=output)
    per = [r["cpu_s_per_step"] for r in run.metrics if "cpu_s_per_step" in r and r["step"] > 10]
    print(json.dumps({"cpu_s_per_step": statistics.median(per), "windows": per, "startup_cpu_s": ready,
                      "run_cpu_s": cpu() - ready}))


def measure(args) -> None:
    """--measure: time every distinct stage and each family's scoring now (see the module docstring)."""
    import subprocess
    import sys
    import tempfile
    import time

    import torch

    from savl import zoo, zoo_schedule
    from savl.models.io import load_model
    from savl.provenance import git_commit, machine_info
    from savl.train.config import config_hash

    torch.set_num_threads(1)
    entries = zoo.entries()
    load_start = os.getloadavg()
    # The distinct stages, timed `--jobs` at a time (as `make models` trains them: one process per core, sharing
    # the memory bandwidth).
    todo, chains = {}, {}
    for name, e in entries.items():
        chains[name] = []
        for depth, cfg in enumerate(_chain(e)):
            # the seed changes what is drawn, not what a step costs
            key = config_hash(_short(cfg.model_copy(update={"seed": 0}), args.measure, Path("/unused")))
            todo.setdefault(key, (name, depth, cfg.stage))
            chains[name].append((key, cfg))
    stages, queue, running = {}, list(todo.items()), []
    with tempfile.TemporaryDirectory() as tmp:
        while queue or running:
            while queue and len(running) < args.jobs:
                key, (name, depth, stage) = queue.pop(0)
                cmd = [sys.executable, __file__, "--_time-stage", name, str(depth), str(args.measure),
                       str(Path(tmp) / key)]
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
                running.append((key, name, stage, proc))
            key, name, stage, proc = running.pop(0)
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"timing {name} ({stage}) failed:\n{err[-2000:]}")
            t = json.loads(out.strip().splitlines()[-1])
            t["fixed_s"] = max(t["run_cpu_s"] - args.measure * t["cpu_s_per_step"], 0.0)
            stages[key] = {"first_entry": name, "stage": stage, **t}
            print(f"{name} {stage}: {t['cpu_s_per_step']:.3f} CPU-s/step, fixed {t['fixed_s']:.1f} s, start-up "
                  f"{t['startup_cpu_s']:.1f} s", flush=True)
    rows = []
    for name, e in entries.items():
        chain = []
        for key, cfg in chains[name]:
            t, it = stages[key], cfg.schedule.iterations
            vals = max(1, it // cfg.val_every) if cfg.val_every else 1
            chain.append({"stage": cfg.stage, "steps": it, "cpu_s": it * t["cpu_s_per_step"] + vals * t["fixed_s"]})
        # one worker process per entry: its start-up once (the first stage's measurement)
        startup = stages[chains[name][0][0]]["startup_cpu_s"]
        rows.append({"name": name, "tier": e.tier, "stages": chain, "family": e.config, "startup_cpu_s": startup})
    scoring = {}
    for r in rows:
        fam = r["family"]
        if fam not in scoring:
            model = load_model(zoo.weights_path(r["name"])).eval()
            c0 = time.process_time()
            zoo._score(entries[r["name"]], model)
            scoring[fam] = time.process_time() - c0
            print(f"scoring {r['name']} ({fam}): {scoring[fam]:.1f} CPU-s", flush=True)
        r["scoring_cpu_s"] = scoring[fam]
        r["cpu_s"] = r["startup_cpu_s"] + sum(s["cpu_s"] for s in r["stages"]) + r["scoring_cpu_s"]
    load_end = os.getloadavg()
    deps = zoo_schedule.dependencies(list(entries))
    tiers = {}
    for tier in sorted({r["tier"] for r in rows}):
        cost = {r["name"]: r["cpu_s"] for r in rows if r["tier"] == tier}
        sub = {n: [d for d in ds if d in cost] for n, ds in deps.items() if n in cost}
        tiers[tier] = {"entries": len(cost), "cpu_s_total": sum(cost.values()),
                       "plan_s_1_worker": zoo_schedule.plan(cost, sub, 1),
                       f"plan_s_{args.jobs}_workers": zoo_schedule.plan(cost, sub, args.jobs)}
    summary = {"commit": git_commit(), "steps_timed": args.measure, "jobs": args.jobs, "machine": machine_info(),
               "load_start": load_start, "load_end": load_end, "tiers": tiers,
               "stage_timings": list(stages.values())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo_budget_measured.json").write_text(json.dumps({"summary": summary, "entries": rows}, indent=1) + "\n")

    def m(s):
        return f"{s / 60:.1f}"

    lines = [
        "# The model zoo's training budget, measured now",
        "",
        f"Written by `python benchmarks/zoo_budget.py --measure {args.measure} --jobs {args.jobs}` at commit "
        f"{summary['commit'][:10]} on {summary['machine'].get('cpu_model', 'an unknown CPU')} "
        f"({os.cpu_count()} cores); load average (1, 5, 15 min) {[round(x, 2) for x in load_start]} at the start, "
        f"{[round(x, 2) for x in load_end]} at the end. Every distinct stage trained {args.measure} steps at one "
        f"thread in a fresh process, {args.jobs} processes at a time; an entry's estimate is its chain's steps "
        "times the measured CPU seconds per step, plus one start-up, plus the run's fixed cost (set-up, one "
        "validation, saving) once per validation (set-up and saving over-counted), plus scoring its card "
        "(timed once per zoo config, one process alone). The plan's minutes are CPU time of one thread per worker, "
        "which on otherwise idle cores is the wall time.",
        "",
        "| tier | entries | CPU min | on 1 worker (min) | on " + str(args.jobs) + " workers (min) |",
        "|---|---:|---:|---:|---:|",
    ]
    for tier, t in tiers.items():
        lines.append(f"| {tier} | {t['entries']} | {m(t['cpu_s_total'])} | {m(t['plan_s_1_worker'])} | "
                     f"{m(t[f'plan_s_{args.jobs}_workers'])} |")
    lines += ["", "| entry | tier | stages (steps) | training CPU min | scoring CPU min | total CPU min |",
              "|---|---|---|---:|---:|---:|"]
    for r in rows:
        st = " + ".join(f"{s['stage']} ({s['steps']})" for s in r["stages"])
        train_s = sum(s["cpu_s"] for s in r["stages"])
        lines.append(f"| {r['name']} | {r['tier']} | {st} | {m(train_s)} | {m(r['scoring_cpu_s'])} | "
                     f"{m(r['cpu_s'])} |")
    lines += ["", "Per stage (CPU seconds per step, median of the logged 10-step windows after the first; start-up "
              "and fixed cost in CPU seconds):", "",
              "| first entry | stage | CPU-s/step | windows | start-up s | fixed s |", "|---|---|---:|---|---:|---:|"]
    for t in stages.values():
        w = ", ".join(f"{x:.3f}" for x in t["windows"])
        lines.append(f"| {t['first_entry']} | {t['stage']} | {t['cpu_s_per_step']:.3f} | {w} | "
                     f"{t['startup_cpu_s']:.1f} | {t['fixed_s']:.1f} |")
    (out / "zoo_budget_measured.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:4 + 2 + len(tiers) + 2]))


def main(argv=None) -> None:
    from savl import zoo, zoo_schedule
    from savl.provenance import git_commit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(zoo.runs_root()))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--measure", type=int, metavar="STEPS", help="time the zoo now, STEPS steps per stage")
    ap.add_argument("--_time-stage", nargs=4, metavar=("NAME", "DEPTH", "STEPS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._time_stage:
        name, depth, steps, output = args._time_stage
        return _time_stage(name, int(depth), int(steps), output)
    if args.measure:
        return measure(args)

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
        "tiers": {},
    }
    for tier in sorted({r["tier"] for r in timed}):
        sub = {n: c for n, c in cpu.items() if entries[n].tier == tier}
        summary["tiers"][tier] = {"entries": len(sub), "cpu_s_total": sum(sub.values()),
                                  f"plan_cpu_s_{args.jobs}_workers": zoo_schedule.plan(sub, deps, args.jobs)}
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
        "(load averages of 2-14), so they overstate an idle machine's time. Under that load the CPU time grows "
        "too (the processes shared caches and memory bandwidth): `zoo_budget.py --measure 60` times the same "
        "stages afresh (run it on an idle machine), and `zoo_retrain.md` records a whole `make models` from scratch.",
        "",
        f"- Entries timed: {summary['entries_timed']}; listed but not trained: "
        f"{', '.join(summary['entries_not_trained']) or 'none'}.",
        f"- Whole zoo (every tier), CPU time: {m(summary['cpu_s_total'])} min; on 1 worker (`--jobs 1`) "
        f"{m(summary['plan_cpu_s_1_worker'])} min, on {args.jobs} workers (`--jobs {args.jobs}`) "
        f"{m(summary[f'plan_cpu_s_{args.jobs}_workers'])} min of idle-core time.",
        f"- The same {args.jobs}-worker schedule with the wall times as trained (under load): "
        f"{m(summary[f'plan_wall_s_{args.jobs}_workers_as_trained'])} min.",
    ]
    lines += [
        f"- Tier {t}: {v['entries']} entries, {m(v['cpu_s_total'])} CPU min, on {args.jobs} workers "
        f"{m(v[f'plan_cpu_s_{args.jobs}_workers'])} min."
        for t, v in summary["tiers"].items()
    ]
    lines += [
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
