"""The staged training loop: `train(config) -> Run`, and `get_or_train`, which trains only when no finished
run of the same config hash exists (it is here, not in `savl.train.run`, because `train` calls it for
`init_from` and it calls `train`: one module, so the imports run one way, loop -> run).

One call trains one stage. Adam (0.9, 0.99) with the step-halving lr of `TrainConfig.lr_at`, KL annealing
inside SAVL (Eq. 29-30), optional gradient clipping, bf16 autocast (opt-in), torch.compile (opt-in, per
network so state-dict keys stay plain), EMA of the SR net (torch.optim.swa_utils), a NaN/Inf guard that stops
before the bad update touches the weights, periodic validation (PSNR on a frozen synthetic set), and exact
resume from the last checkpoint (weights, optimisers, EMA, RNG streams, pool; data positions follow the step).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from savl.errors import ConfigError, ModelFileError, SavlError
from savl.train import checkpoint as ckpt
from savl.train.config import (
    TrainConfig,
    as_config,
    config_hash,
    dump_yaml,
    init_config,
    init_from_model_file,
    load_config,
    run_name,
)
from savl.train.data import BatchSource, _rank_seed, hr_training_files, validation_guide, validation_set
from savl.train.distributed import DistInfo, setup, teardown
from savl.train.records import MetricsLog, Progress, atomic_text, environment
from savl.train.run import Run, RunLock, clear_run, find_run, looks_like_run, run_dir
from savl.train.stages import build_models, make_objective

# Test hook (not a config key, so it never enters a config hash): after writing the checkpoint of this step,
# sleep so a test can kill the process at a known point (resume test).
HANG_ENV = "SAVL_TEST_HANG_AFTER_CHECKPOINT"


class NonFiniteLossError(SavlError):
    """A loss term or the gradient norm became NaN/Inf; the last good checkpoint is left in place."""


def train(config, resume: bool = False, overrides=(), fresh: bool = False) -> Run:
    """Train one stage; returns the finished Run. `resume` continues from the run's last checkpoint exactly;
    `fresh` replaces an existing run folder of the same name. Under torchrun every process calls this."""
    cfg = as_config(config, overrides)
    info = setup(cfg.device)
    try:
        return _Trainer(cfg, info).run(resume, fresh)
    finally:
        teardown(info)


def get_or_train(config, root: str | Path | None = None, overrides=()) -> Run:
    """Return the finished run of this config (matched by `config_hash`), training it first if there is none.

    config: a TrainConfig, a dict or a YAML path. root: where runs live (default the config's `output`).
    An unfinished run of the same name is resumed from its last checkpoint.
    """
    cfg = as_config(config, overrides)
    if root is not None:
        cfg = cfg.model_copy(update={"output": str(root)})
    found = find_run(cfg)
    if found is not None:
        return found
    folder = run_dir(cfg)
    resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step_*"))
    if resume and (folder / "config.yaml").is_file():
        try:
            if config_hash(load_config(folder / "config.yaml")) != config_hash(cfg):
                resume = False
        except ConfigError:
            resume = False
    return train(cfg, resume=resume, fresh=not resume)


def _resume_identity(cfg: TrainConfig) -> str:
    """What must match to resume: everything but the number of iterations (a run may be extended)."""
    return config_hash(cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"iterations": 1})}))


def _psnr(sr: torch.Tensor, hr: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image PSNR on Y of 8-bit-rounded images, as `savl eval` scores: savl.metrics.psnr, else inline."""
    try:
        from savl.metrics import psnr
    except ImportError:  # the metrics module is written concurrently; same BasicSR convention inline
        psnr = None
    if psnr is not None:
        return psnr(sr, hr, crop_border=border, y_channel=True)
    sr, hr = (sr.clamp(0, 1) * 255).round() / 255, (hr.clamp(0, 1) * 255).round() / 255
    if border:
        sr, hr = sr[..., border:-border, border:-border], hr[..., border:-border, border:-border]
    w = torch.tensor([65.481, 128.553, 24.966], dtype=sr.dtype, device=sr.device).view(1, 3, 1, 1)
    ys, yh = 16 + (sr * w).sum(1), 16 + (hr * w).sum(1)
    mse = (ys - yh).square().flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


class _Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info, self.dev = cfg, info, info.device
        self.hash = config_hash(cfg)
        self.run_dir = run_dir(cfg)  # checks that the name is one folder under cfg.output
        self.ckpt_root = self.run_dir / "checkpoints"

    # ------------------------------------------------------------------------------------------ set-up
    def _prepare_dir(self, resume: bool, fresh: bool) -> Path | None:
        """Returns the checkpoint to resume from (None: start at step 0)."""
        latest = ckpt.latest_checkpoint(self.ckpt_root)
        if resume and latest is not None:
            saved = as_config(self.run_dir / "config.yaml")
            if _resume_identity(saved) != _resume_identity(self.cfg):
                raise ConfigError(
                    f"{self.run_dir / 'config.yaml'}: the run was started with a different config; "
                    "only schedule.iterations may change on --resume"
                )
            trained, total = int(latest.name.split("_")[1]), self.cfg.schedule.iterations
            if trained > total:
                # Its weights have seen `trained` steps: finishing it as a `total`-step run would be a lie.
                raise ConfigError(
                    f"{self.run_dir}: has trained {trained} steps already; --resume with schedule.iterations "
                    f"{total} cannot shorten it (give at least {trained}, or start a run under another name)"
                )
            return latest
        if latest is not None and not fresh:
            raise ConfigError(f"{self.run_dir}: holds checkpoints; pass --resume to continue or choose another name")
        if fresh and self.run_dir.exists() and not looks_like_run(self.run_dir):
            raise ConfigError(f"{self.run_dir}: is not a savl run, so it is never deleted; choose another name")
        self.info.barrier()
        if self.info.main and self.run_dir.exists() and fresh:
            clear_run(self.run_dir)
        self.info.barrier()
        return None

    def _init_from(self, models: dict[str, nn.Module]) -> None:
        """Load the previous stage's final weights (a run folder, or a config trained here if missing), or the SR
        net's weights from a model file (a shipped zoo model)."""
        from savl.models.io import load_weights

        cfg = self.cfg
        model_file = init_from_model_file(cfg)
        if model_file is not None:
            if models.get("srnet") is None:
                raise ConfigError(f"{model_file}: init_from a model file starts an SR net; stage {cfg.stage} has none")
            if not model_file.is_file():
                raise ConfigError(f"{model_file}: init_from names no such model file (train or restore it first)")
            load_weights(models["srnet"], model_file)
            return
        prev_cfg = init_config(cfg)
        prev = get_or_train(prev_cfg) if prev_cfg is not None else Run(Path(cfg.init_from))
        if not prev.finished:
            raise ConfigError(f"{prev.path}: init_from names a run that has not finished")
        srnet, savl = models.get("srnet"), models.get("savl")
        # Models other than the SR net and SAVL (a baseline's, e.g. DACESR's REE) load from a file of their name.
        others = [n for n in models if n not in ("srnet", "savl", "discriminator") and prev.has(n)]
        for name in others:
            load_weights(models[name], prev.final / f"{name}.safetensors")
        if srnet is not None and prev.has("srnet"):
            load_weights(srnet, prev.final / "srnet.safetensors")
        if savl is not None and prev.has("savl"):
            load_weights(savl, prev.final / "savl.safetensors")
        elif getattr(srnet, "encoder", None) is not None and not prev.has("srnet") and prev.has("savl"):
            srnet.encoder.load_state_dict(prev.load_savl().encoder.state_dict())
        elif not (prev.has("srnet") or prev.has("savl") or others):
            raise ConfigError(f"{prev.path}: init_from run has no final model to start from")

    def _build(self):
        cfg, dev, info = self.cfg, self.dev, self.info
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        models = build_models(cfg)
        if cfg.init_from:
            self._init_from(models)
        # DDP's gradient buckets and broadcast assume contiguous parameters (channels-last ones fail at start-up).
        channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cpu" and not info.enabled
        if channels_last and info.enabled:
            raise ConfigError("channels_last: true does not work with several processes (DDP); leave it unset")
        for m in models.values():
            m.to(dev).train()
            if channels_last:  # 4-D weights only; checkpoints are written contiguous (savl.models.io.save_model)
                m.to(memory_format=torch.channels_last)
        self.models = models
        self.srnet, self.savl, self.disc = models.get("srnet"), models.get("savl"), models.get("discriminator")
        self.objective = make_objective(cfg, models).to(dev)
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        o = cfg.optimiser
        self.opt = _adam(self.params, o.fused, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.opt_club = None
        if self.savl is not None and self.savl.club is not None:
            self.opt_club = _adam(list(self.savl.club.parameters()), o.fused, lr=o.lr_club, betas=o.betas)
        self.opt_d = None
        if self.disc is not None:
            self.opt_d = _adam(list(self.disc.parameters()), o.fused, lr=o.lr_d or o.lr, betas=o.betas)
        self.ema = None
        if cfg.ema and self.srnet is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.srnet, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        self.perceptual = None
        if cfg.stage == "gan" and cfg.losses.perceptual > 0:
            from savl.losses import PerceptualLoss

            weights = "imagenet" if cfg.losses.perceptual_trunk == "imagenet" else None
            self.perceptual = PerceptualLoss(weights=weights, layer_weights=cfg.losses.perceptual_layers).to(dev)
        if cfg.compile:
            for m in (self.srnet, self.savl, self.disc):
                if m is not None:
                    for child in m.children():
                        child.compile()
        self.model = self.objective
        self.disc_model = self.disc
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev] if dev.type == "cuda" else None
            self.model = DDP(self.objective, device_ids=ids, find_unused_parameters=False)
            if self.disc is not None:
                self.disc_model = DDP(self.disc, device_ids=ids, find_unused_parameters=False)
        # Per-rank streams for everything random after initialisation (drop-path, code sampling, data).
        seed = _rank_seed(cfg.seed, info.rank, 2)
        torch.manual_seed(seed)
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 (seed the global stream)
        self.noise = torch.Generator(device=dev).manual_seed(_rank_seed(cfg.seed, info.rank, 3))

    def _state(self, step: int) -> dict:
        s = {"step": step, "hash": self.hash, "world": self.info.world, "optimiser": self.opt.state_dict()}
        if self.opt_club is not None:
            s["optimiser_club"] = self.opt_club.state_dict()
        if self.opt_d is not None:
            s["optimiser_d"] = self.opt_d.state_dict()
        if self.ema is not None:
            s["ema_n_averaged"] = self.ema.n_averaged.detach().cpu()
        return s

    def _weights(self) -> dict[str, nn.Module]:
        out = {k: v for k, v in self.models.items()}
        if self.ema is not None:
            out["srnet_ema"] = self.ema.module
        return out

    def _checkpoint(self, step: int) -> None:
        info = self.info
        tmp = ckpt.tmp_dir(self.ckpt_root, step)
        if info.main:
            ckpt.prepare(self.ckpt_root, step)
        info.barrier()
        rank_state = {"rng": ckpt.capture_rng({"noise": self.noise}), "data": self.source.state()}
        ckpt.write_rank_state(tmp, info.rank, rank_state)
        info.barrier()
        if info.main:
            ckpt.finalise(tmp, self.ckpt_root, step, self._weights(), self._state(step), self.cfg.keep_last)
        info.barrier()
        hang = os.environ.get(HANG_ENV)
        if hang is not None and int(hang) == step:
            time.sleep(3600)

    def _restore(self, path: Path) -> int:
        from savl.models.io import load_weights

        state = ckpt.load_state(path)
        needed = ["step", "world", "optimiser"]
        needed += ["optimiser_club"] * (self.opt_club is not None) + ["optimiser_d"] * (self.opt_d is not None)
        needed += ["ema_n_averaged"] * (self.ema is not None)
        missing = [k for k in needed if not isinstance(state, dict) or k not in state]
        if missing:
            raise ModelFileError(f"{path / 'state.pt'}: not a checkpoint of this run (no {', '.join(missing)})")
        if state["world"] != self.info.world:
            raise ConfigError(f"{path}: written by {state['world']} processes, resumed with {self.info.world}")
        for name, model in self._weights().items():
            load_weights(model, path / f"{name}.safetensors")
        self.opt.load_state_dict(state["optimiser"])
        if self.opt_club is not None:
            self.opt_club.load_state_dict(state["optimiser_club"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(state["optimiser_d"])
        if self.ema is not None:
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
        rank = ckpt.load_state(path, f"rank{self.info.rank}.pt")
        if not isinstance(rank, dict) or "rng" not in rank or "data" not in rank:
            raise ModelFileError(f"{path / f'rank{self.info.rank}.pt'}: not a checkpoint of this run (no rng, data)")
        ckpt.restore_rng(rank["rng"], {"noise": self.noise})
        self.source.load_state(rank["data"], state["step"])
        return int(state["step"])

    # ------------------------------------------------------------------------------------------ running
    def run(self, resume: bool, fresh: bool) -> Run:
        """Train under the run folder's lock (rank 0 holds it; every rank stops if it cannot be had)."""
        lock, refused = None, None
        if self.info.main:
            try:
                lock = RunLock(self.run_dir).acquire()
            except ConfigError as e:
                refused = e
        if self.info.broadcast_flag(refused is not None):
            raise refused or ConfigError(f"{self.run_dir}: in use by another training (see rank 0)")
        try:
            return self._run(resume, fresh)
        finally:
            if lock is not None:
                lock.release()

    def _run(self, resume: bool, fresh: bool) -> Run:
        cfg, info = self.cfg, self.info
        if cfg.threads and self.dev.type == "cpu":
            torch.set_num_threads(cfg.threads)
        if self.dev.type == "cpu":
            # Subnormal floats (tiny blur-kernel taps, near-zero attention probabilities) run many times slower
            # on x86; flushing them to zero changes no result above 1e-38 and makes CPU steps 9-28 % faster.
            # The flag is per thread (the calling thread's; intra-op workers keep their own).
            torch.set_flush_denormal(True)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        # The training images are listed before anything is built or trained (init_from may train a previous
        # stage first): a missing dataset fails here, in one line, naming the command that fetches it.
        files = hr_training_files(cfg) if cfg.data.source == "hr_folder" else None
        latest = self._prepare_dir(resume, fresh)
        if info.main:
            # Not finished until this training says so: a stale done.json must not vouch for new weights.
            (self.run_dir / "done.json").unlink(missing_ok=True)
        self._build()
        self.source = BatchSource(cfg, info.rank, info.world, self.dev, files=files, prefetch=cfg.prefetch)
        start = self._restore(latest) if latest is not None else 0
        if info.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_text(self.run_dir / "config.yaml", dump_yaml(cfg))
            atomic_text(self.run_dir / "env.json", json.dumps(environment(self.dev, info.world), indent=2) + "\n")
        self.valset = None
        if info.main and (cfg.data.val_data or cfg.data.source != "paired"):
            self.valset = validation_set(cfg, self.run_dir / "valset")
        info.barrier()
        log = MetricsLog(self.run_dir, start if latest is not None else None) if info.main else None
        total = cfg.schedule.iterations
        bar = Progress(cfg.progress, total, start, cfg.log_every, info.main, run_name(cfg))
        try:
            self._loop(start, total, log, bar)
        finally:
            self.source.close()
            bar.close()
            if log is not None:
                log.close()
        if info.main:
            from savl.models.io import save_model

            for name, model in self._weights().items():
                save_model(model, self.run_dir / "final" / f"{name}.safetensors", extra={"run": run_name(cfg)})
            done = {"hash": self.hash, "step": total, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            atomic_text(self.run_dir / "done.json", json.dumps(done, indent=2) + "\n")
        info.barrier()
        return Run(self.run_dir)

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _guard(self, it: int, terms: dict[str, torch.Tensor]) -> None:
        """Stop before the update if any term is NaN/Inf (one host sync per step)."""
        names = list(terms)
        finite = torch.stack([terms[k].detach().float().reshape(()) for k in names]).isfinite()
        bad_here = not bool(finite.all())
        if self.info.broadcast_flag(bad_here):
            bad = names[int((~finite).nonzero()[0, 0])] if bad_here else "on another rank"
            last = ckpt.latest_checkpoint(self.ckpt_root)
            kept = f"last good checkpoint {last} kept" if last is not None else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"step {it}: loss term {bad!r} is not finite; {kept}; try a lower optimiser.lr, "
                f"optimiser.grad_clip (e.g. 1.0), precision fp32 or a longer losses.anneal_steps"
            )

    def _loop(self, start: int, total: int, log: MetricsLog | None, bar: Progress) -> None:
        cfg, info = self.cfg, self.info
        lo = cfg.losses
        images_per_step = cfg.batch
        t0, c0, n_steps = time.perf_counter(), time.process_time(), 0
        for step in range(start, total):
            it = step + 1
            lr_now = cfg.lr_at(step)
            for g in self.opt.param_groups:
                g["lr"] = lr_now
            lr_img, target, real, guide = self.source.next(ahead=it < total)
            self.objective.train()
            with self._autocast():
                # the batch's kernel map goes to the rrdb_sft objective only (other objectives take five arguments)
                extra = (guide,) if cfg.stage == "rrdb_sft" else ()
                terms = self.model(lr_img, target, step, self.noise, real, *extra)
            sr = terms.pop("sr", None)
            if self.disc is not None:
                self.disc.requires_grad_(False)
                with self._autocast():
                    if self.perceptual is not None:
                        terms["percep"] = self.perceptual(sr, target)
                        terms["loss"] = terms["loss"] + lo.perceptual * terms["percep"]
                    terms["gan_g"] = _gan(self.disc(sr), True, False, lo.gan_kind)
                    terms["loss"] = terms["loss"] + lo.gan * terms["gan_g"]
            if cfg.debug.nan_at_step == it:
                terms[cfg.debug.nan_term] = terms[cfg.debug.nan_term] * float("nan")
            self._guard(it, terms)
            self.opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if step == start:
                _check_gradients(self.objective)
            if cfg.optimiser.grad_clip:
                gn = torch.nn.utils.clip_grad_norm_(self.params, cfg.optimiser.grad_clip)
                terms["grad_norm"] = gn
                self._guard(it, {"grad_norm": gn})
            self.opt.step()
            if self.disc is not None:
                terms.update(self._discriminator_step(step, real, sr.detach()))
            if self.opt_club is not None:
                terms["club_q"] = self._club_step(step, lr_img, real)
            if self.ema is not None:
                self.ema.update_parameters(self.srnet)
            n_steps += 1
            record = None
            if it % cfg.log_every == 0 or it == total:
                elapsed = time.perf_counter() - t0
                record = {"step": it, "lr": lr_now}
                record.update({k: float(v.detach().float()) for k, v in terms.items()})
                record["images_per_s"] = n_steps * images_per_step / max(elapsed, 1e-9)
                record["s_per_step"] = elapsed / max(n_steps, 1)
                # process CPU seconds (all threads) per step: comparable across loaded and idle machines
                record["cpu_s_per_step"] = (time.process_time() - c0) / max(n_steps, 1)
                t0, c0, n_steps = time.perf_counter(), time.process_time(), 0
            if (cfg.val_every and it % cfg.val_every == 0) or it == total:
                if info.main and self.valset is not None:
                    record = (record or {"step": it}) | self._validate(it, log)
                info.barrier()
            if info.main and record is not None and log is not None:
                log.write(record)
            bar.update(it, record)
            if (cfg.checkpoint_every and it % cfg.checkpoint_every == 0) or it == total:
                self._checkpoint(it)

    def _discriminator_step(self, step: int, real: torch.Tensor, fake: torch.Tensor) -> dict:
        lo, o = self.cfg.losses, self.cfg.optimiser
        self.disc.requires_grad_(True)
        for g in self.opt_d.param_groups:
            g["lr"] = self.cfg.lr_at(step, o.lr_d or o.lr)
        b = real.shape[0]
        with self._autocast():
            logits = self.disc_model(torch.cat([real, fake]))  # one forward: DDP allows one per backward
            d_real = _gan(logits[:b], True, True, lo.gan_kind)
            d_fake = _gan(logits[b:], False, True, lo.gan_kind)
        self._guard(step + 1, {"d_real": d_real, "d_fake": d_fake})
        self.opt_d.zero_grad(set_to_none=True)
        (d_real + d_fake).backward()
        self.opt_d.step()
        return {"d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def _club_step(self, step: int, lr_img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The alternating CLUB update (deterministic_club variant); gradients averaged over ranks by hand
        because the CLUB net sits outside the DDP-wrapped objective."""
        with self._autocast():
            loss = self.savl.club_step(lr_img, target, self.noise)
        self.opt_club.zero_grad(set_to_none=True)
        loss.backward()
        self.info.all_reduce_mean([p.grad for p in self.savl.club.parameters()])
        self.opt_club.step()
        return loss.detach()

    @torch.no_grad()
    def _validate(self, it: int, log: MetricsLog | None) -> dict:
        from savl.io import write_image

        scale = self.cfg.data.scale
        net = self.ema.module if self.ema is not None else self.srnet
        if net is None and self.savl is None:
            return {}  # a stage with neither (DACESR's REE): nothing to validate on images
        out_dir = self.run_dir / "samples" / f"step_{it:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        scores = []
        modules = [m for m in (net, self.savl) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            for i in range(len(self.valset)):
                item = self.valset[i]
                lr = item["lr"][None].to(self.dev)
                hr = item["hr"][None].to(self.dev)
                if getattr(getattr(net, "config", None), "guidance", None) == "kernel":  # rrdb_sft
                    pred = net(lr, validation_guide(self.valset, i, self.dev)).clamp(0, 1).float()
                    scores.append(float(_psnr(pred, hr, scale)[0]))
                elif net is not None:
                    pred = net(lr).clamp(0, 1).float()
                    scores.append(float(_psnr(pred, hr, scale)[0]))
                else:  # representation stage: how well the decoder re-degrades the GT with the mean code
                    pred = self.savl.decoder(hr, self.savl.encoder(lr).mean).clamp(0, 1).float()
                    scores.append(float(_psnr(pred, lr, 0)[0]))
                write_image(out_dir / f"{item['name']}.png", pred[0].cpu())
                if log is not None and i == 0:
                    log.image("val/" + item["name"], pred[0].cpu(), it)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        key = "val_psnr" if net is not None else "val_rec_psnr"
        return {key: sum(scores) / len(scores)}


def _adam(params: list, fused: bool | None, **kw) -> torch.optim.Adam:
    """Adam, fused where asked (`optimiser.fused`: None = where the parameters' device has a fused kernel).

    The fused kernel updates every parameter in one pass (1.07x the representation step on one CPU thread,
    benchmarks/results/speed_cpu.md). Its state dict has the for-each one's entries, so checkpoints load either
    way; a resumed optimiser keeps the implementation its checkpoint recorded.
    """
    if fused is None:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = {p.device.type for p in params}
        fused = bool(params) and devices <= set(_get_fused_kernels_supported_devices())
    return torch.optim.Adam(params, fused=fused or None, **kw)


def _gan(pred, real: bool, for_d: bool, kind: str):
    from savl.losses import gan_loss

    return gan_loss(pred, real, for_discriminator=for_d, kind=kind)


def _check_gradients(module: nn.Module) -> None:
    """DDP runs with find_unused_parameters=False: every trainable parameter must get a gradient each step."""
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise RuntimeError(f"{len(missing)} trainable parameters got no gradient, first {missing[0]!r}")
