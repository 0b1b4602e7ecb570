"""Training the model zoo on several cores: which entries wait for which, and a worker pool that respects it.

The zoo's models are small, so one process at one thread uses a core better than one process spread over two
(the per-step work is too small to split well). `savl models train --jobs N` therefore trains N entries at a
time, each in its own process at one thread. An entry that starts from another entry's shipped weights (a
config that names `models/<other>/...`, e.g. the RRDB-SFT code variant's SAVL encoder) waits until that entry
is packaged.

Both the pool and `plan` (the same schedule on paper: given each entry's training time, the wall time of the
whole zoo on N workers) take the longest ready entry first, so that a long entry (DACESR's selective scan)
does not start last and run alone at the end. The pool's lengths are `estimated_costs`.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable


def dependencies(names: Iterable[str], root=None) -> dict[str, set[str]]:
    """For each entry, the other zoo entries whose shipped files its resolved run config names."""
    from savl import zoo

    known = zoo.entries(root)
    names = list(names)
    folders = {n: str(zoo.model_dir(n, root).resolve()) + os.sep for n in known}
    deps: dict[str, set[str]] = {}
    for name in names:
        text = json.dumps(known[name].train_config().to_dict(), default=str)
        deps[name] = {other for other, folder in folders.items() if other != name and folder in text}
    return deps


def order(names: list[str], deps: dict[str, set[str]]) -> list[str]:
    """`names` in an order in which every entry comes after the entries it needs (stable otherwise)."""
    out: list[str] = []
    pending = list(names)
    while pending:
        ready = [n for n in pending if not deps.get(n, set()) & set(pending)]
        if not ready:
            raise ValueError(f"the zoo entries {', '.join(pending)} wait for each other")
        out += ready
        pending = [n for n in pending if n not in ready]
    return out


def plan(durations: dict[str, float], deps: dict[str, set[str]], jobs: int) -> float:
    """The wall time of training every entry of `durations` on `jobs` workers (longest ready entry first)."""
    remaining = dict(durations)
    finished_at: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    clock = 0.0
    while remaining or running:
        ready = sorted(
            (n for n in remaining if all(d in finished_at or d not in durations for d in deps.get(n, ()))),
            key=lambda n: -remaining[n],
        )
        while ready and len(running) < jobs:
            n = ready.pop(0)
            heapq.heappush(running, (clock + remaining.pop(n), n))
        if not running:
            raise ValueError(f"the zoo entries {', '.join(remaining)} wait for each other")
        clock, n = heapq.heappop(running)
        finished_at[n] = clock
    return clock


def _own_steps(cfg) -> int:
    """Steps of a run config and of the configs it starts from (`init_from` a YAML file); a zoo model's weights
    it starts from are another entry's cost."""
    from savl.train.config import init_config

    steps = 0
    while cfg is not None:
        steps += cfg.schedule.iterations
        cfg = init_config(cfg)
    return steps


def estimated_costs(names: Iterable[str], root=None) -> dict[str, float]:
    """A rough training time per entry, for ordering only: its own steps times the median seconds per step of
    its shipped training log. When any entry has no log (e.g. the zoo's folders were removed to retrain from
    scratch), all are compared by steps alone."""
    import statistics

    from savl import zoo

    names = list(names)
    steps = {n: float(_own_steps(zoo.entry(n, root).train_config())) for n in names}
    per_step = {}
    for n in names:
        log = zoo.model_dir(n, root) / "metrics.jsonl"
        if log.is_file():
            times = [r["s_per_step"] for r in map(json.loads, log.read_text().splitlines()) if "s_per_step" in r]
            if times:
                per_step[n] = statistics.median(times)
    if len(per_step) < len(names):
        return steps
    return {n: steps[n] * per_step[n] for n in names}


def _worker_init() -> None:
    # One thread per worker: set before torch is first imported in this process.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _build(name: str, root, runs) -> dict:
    from savl import zoo

    return zoo.build(name, root=root, runs=runs)


def train_parallel(names: list[str], jobs: int, root=None, runs=None,
                   on_done: Callable[[str, dict], None] | None = None,
                   deps: dict[str, set[str]] | None = None, build: Callable = _build,
                   costs: dict[str, float] | None = None) -> None:
    """Train and package `names` on `jobs` processes, each entry after the entries it needs, the longest ready
    entry first.

    `deps` defaults to `dependencies(names, root)`, `costs` (entry -> length, any unit) to
    `estimated_costs(names, root)`; `build(name, root, runs)` (a module-level function, run in the workers)
    defaults to `savl.zoo.build`.
    """
    deps = dependencies(names, root) if deps is None else deps
    costs = estimated_costs(names, root) if costs is None else costs
    waiting = {n: set(deps.get(n, ())) & set(names) for n in names}
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init) as pool:
        futures: dict[cf.Future, str] = {}

        def submit_ready():
            # the pool starts entries in the order they are submitted
            for n in sorted((n for n, w in waiting.items() if not w), key=lambda n: -costs.get(n, 0.0)):
                del waiting[n]
                futures[pool.submit(build, n, root, runs)] = n

        submit_ready()
        while futures:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                name = futures.pop(fut)
                card = fut.result()  # a failed entry stops the pool with its own error
                for w in waiting.values():
                    w.discard(name)
                if on_done is not None:
                    on_done(name, card)
            submit_ready()
