"""Training batches and the frozen validation set (book appendix, Real-ESRGAN).

The batch of step t on rank r is a pure function of (seed, t, r): global item positions
g = (t * world + r) * per_rank + i walk through seeded per-epoch permutations of the dataset, and the
datasets seed each crop from (seed, epoch, index). Resuming at step t therefore needs no loader state, and
DDP ranks see disjoint items (the DistributedSampler contract): the items of step t are positions
t * batch ... (t + 1) * batch - 1 of the permuted file list, rank r taking its own `batch / world` of them, so
over an epoch the ranks read disjoint shards of the list that together cover it, and the global batch of a step
is the same whatever the number of ranks. HR patches are degraded per batch on the training device
(Real-ESRGAN pipeline, or any named protocol), optionally through the training pool.

`hr_folder` data (the paper's DF2K + OST) is read by `savl.data.hr_files.HRFileDataset`: DataLoader workers
(`workers`) decode each image when its item is read and keep nothing, so memory does not grow with the dataset;
the embedded sample photos stay decoded in memory (they are few and small).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from savl.errors import ConfigError


class _Positioned(Dataset):
    """Map a global position g to (epoch, permuted index) of `base` (seeded), setting the base's epoch."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.n = base, int(seed), len(base)
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # positions are unbounded; the sampler decides which are read
        return 2**62

    def __getitem__(self, g: int) -> dict:
        epoch, k = divmod(int(g), self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 7, epoch]).permutation(self.n))
        self.base.set_epoch(epoch)
        return self.base[int(self._perm[1][k])]


class _StepSampler(Sampler):
    """Positions of steps start, start+1, ... for one rank (infinite)."""

    def __init__(self, start_step: int, rank: int, world: int, per_rank: int):
        self.start, self.rank, self.world, self.per_rank = start_step, rank, world, per_rank

    def __iter__(self):
        t = self.start
        while True:
            base = (t * self.world + self.rank) * self.per_rank
            yield from range(base, base + self.per_rank)
            t += 1


def _collate(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in ("hr", "lr") if k in items[0]}
    return out


def _images(cfg, names=None):
    from savl.data import sample_images

    return sample_images(names, max_side=cfg.data.max_side)


class ManetModes:
    """MANet's spatially variant protocol for training (Table 4, A.3): each image's mode drawn uniformly from
    `modes`, then `savl.degrade.spatial.manet_degrade` (x4, noise 15). `with_kernel_map(hr, generator)` returns
    (lr, kernel map, params), the map being the (sig1, sig2, theta) of the kernel that made each LR pixel: the
    ground-truth guidance of the same draw. Calling it returns (lr, params), as a named protocol does."""

    name = "manet"

    def __init__(self, modes=(1, 2, 3, 4, 5), scale: int = 4, noise: float = 15):
        self.modes, self.scale, self.noise = tuple(modes), int(scale), float(noise)

    def with_kernel_map(self, hr: torch.Tensor, generator: torch.Generator | None):
        from savl.degrade.spatial import manet_degrade

        dev = generator.device if generator is not None else "cpu"
        lrs, maps, params = [], [], []
        for i in range(hr.shape[0]):
            mode = self.modes[0]
            if len(self.modes) > 1:  # one mode: no draw, so the stream (and images) equal protocol manet-modeN's
                mode = self.modes[int(torch.randint(0, len(self.modes), (1,), generator=generator, device=dev))]
            lr, kmap, p = manet_degrade(hr[i : i + 1], mode, generator, scale=self.scale, noise=self.noise)
            lrs.append(lr), maps.append(kmap), params.extend(p)
        return torch.cat(lrs), torch.cat(maps), params

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None):
        lr, _, params = self.with_kernel_map(hr, generator)
        return lr, params


class _OneMode(ManetModes):
    def __init__(self, mode: int):
        super().__init__((mode,))
        self.name = f"manet-mode{mode}"


class _Mixture:
    """`data.protocol: a+b+c`: each batch is degraded by one of the named protocols, drawn uniformly from the
    run's degradation generator (so a resumed run draws the same sequence). No USM target (target = GT)."""

    def __init__(self, names: list[str]):
        from savl.degrade.protocols import get_protocol

        self.protocols = [get_protocol(n) for n in names]

    def __call__(self, hr: torch.Tensor, generator: torch.Generator):
        i = int(torch.randint(len(self.protocols), (1,), generator=generator, device=generator.device))
        return self.protocols[i](hr, generator)


def _degradation(cfg):
    """Real-ESRGAN's two-stage pipeline (Wang et al. 2021; USM switch from the config), a mixture (a+b: one of
    them per batch), MANet's modes (`ManetModes`) or a named protocol."""
    if "+" in cfg.data.protocol:
        return _Mixture(cfg.data.protocol.split("+"))
    from savl.degrade.protocols import MANET_NOISE

    p = cfg.data.protocol
    if p == "manet":
        return ManetModes(scale=cfg.data.scale, noise=MANET_NOISE)
    if p.startswith("manet-mode") and p[len("manet-mode") :].isdigit():
        from savl.degrade.spatial import MANET_MODES

        mode = int(p[len("manet-mode") :])
        if mode not in MANET_MODES:
            raise ConfigError(f"unknown degradation protocol {p!r}; MANet modes are {MANET_MODES}")
        return _OneMode(mode)  # the same images as the named protocol, with their kernel map
    if cfg.data.protocol == "realesrgan":
        from savl.degrade.realesrgan import RealESRGANConfig, RealESRGANDegradation

        return RealESRGANDegradation(RealESRGANConfig(scale=cfg.data.scale, usm_sharpen_gt=cfg.data.usm))
    from savl.degrade.protocols import get_protocol

    return get_protocol(cfg.data.protocol)


class BatchSource:
    """`next() -> (lr, target, real, guide)`: LR input, the loss target (USM-sharpened GT when `data.usm`, as
    Real-ESRGAN trains), the clean GT (the discriminator's real images), all on `device`, and the batch's
    ground-truth kernel map (MANet protocols, `ManetModes.with_kernel_map`; None for the others).

    With `prefetch` (the config's `prefetch`; CPU only, and not with a degradation pool, whose contents a
    checkpoint would have to copy), the next batch is read and degraded on a background thread while the caller
    trains on this one. Batches are still made one after another from the same generator, so they are the same
    as without it, and `state()` gives the generator as it stood after the last batch handed out (before the
    prefetched one), so a checkpoint resumes exactly."""

    def __init__(
        self, cfg, rank: int, world: int, device: torch.device, start_step: int = 0, files=None, prefetch=False
    ):
        if cfg.batch % world:
            raise ConfigError(f"batch {cfg.batch} must be divisible by the number of processes ({world})")
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.per_rank = cfg.batch // world
        d = cfg.data
        self.paired = d.source == "paired"
        if self.paired:
            from savl.data import PairedFolderDataset

            base = PairedFolderDataset(d.root, d.scale, d.layout, crop=d.gt_size, seed=cfg.seed, augment=True)
            self.degradation = None
        else:
            if d.source == "hr_folder":
                from savl.data.hr_files import HRFileDataset

                files = hr_training_files(cfg) if files is None else files
                base = HRFileDataset(files, patch=d.gt_size, seed=cfg.seed)
            else:
                from savl.data import HRPatchDataset

                base = HRPatchDataset(_images(cfg, d.names), patch=d.gt_size, seed=cfg.seed, cache=True)
            self.degradation = _degradation(cfg)
        self.dataset = _Positioned(base, cfg.seed)
        # The degradation draws and the pool shuffle use their own per-rank generator (checkpointed).
        self.generator = torch.Generator(device=device).manual_seed(_rank_seed(cfg.seed, rank, 1))
        self.pool = None
        if d.pool_size and not self.paired:
            if d.pool_size % cfg.batch:
                raise ConfigError(f"data.pool_size {d.pool_size} must be a multiple of the batch {cfg.batch}")
            from savl.degrade.realesrgan import DegradationPool

            self.pool = DegradationPool(d.pool_size // world, self.per_rank)
        if prefetch is None:  # a spare core for the batch (see TrainConfig.prefetch)
            prefetch = torch.get_num_threads() == 1 and (os.cpu_count() or 1) > 1
        self.prefetch = bool(prefetch) and device.type == "cpu" and self.pool is None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._handed_state: torch.Tensor | None = None  # the generator right after the last batch handed out
        self._start(start_step)

    def _start(self, step: int) -> None:
        sampler = _StepSampler(step, self.rank, self.world, self.per_rank)
        loader = DataLoader(
            self.dataset,
            batch_size=self.per_rank,
            sampler=sampler,
            num_workers=self.cfg.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.cfg.workers > 0,
        )
        self._iter = iter(loader)

    def next(self, ahead: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This step's batch; with prefetch, and `ahead` (False on the last step), start making the next one."""
        if not self.prefetch:
            return self._make()
        pending, self._pending = self._pending, None
        batch = pending.result() if pending is not None else self._make()
        self._handed_state = self.generator.get_state()
        if ahead:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="savl-prefetch")
            self._pending = self._executor.submit(self._make_in_background)
        return batch

    def _make_in_background(self):
        # Flushing subnormals is a per-thread flag (the training thread sets its own; savl.infer.flush_subnormals).
        torch.set_flush_denormal(True)
        return self._make()

    def _drain(self) -> None:
        """Wait for a prefetched batch and drop it (its draws are undone by the caller restoring the generator)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()  # waits; an error in a batch nobody will use is not raised

    def close(self) -> None:
        self._drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @torch.no_grad()
    def _make(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        batch = next(self._iter)
        hr = batch["hr"].to(self.device, non_blocking=True)
        if self.paired:
            lr = batch["lr"].to(self.device, non_blocking=True)
            return lr, hr, hr, None
        deg = self.degradation
        guide = None
        if isinstance(deg, ManetModes):  # the kernel map of this very draw (the pool is refused by the config)
            lr, guide, _ = deg.with_kernel_map(hr, self.generator)
            target = hr
        elif hasattr(deg, "sharpen"):
            lr, _, target = deg(hr, self.generator, return_sharpened=True)
        else:
            lr, _ = deg(hr, self.generator)
            target = hr
        if self.pool is not None:
            lr, both = self.pool(lr, torch.cat([target, hr], 1), self.generator)
            target, hr = both[:, :3], both[:, 3:]
        return lr.contiguous(), target.contiguous(), hr.contiguous(), guide

    def state(self) -> dict:
        # With a batch being prefetched the generator has moved on; the checkpoint wants it as the step left it.
        handed = self._pending is not None and self._handed_state is not None
        out = {"generator": self._handed_state if handed else self.generator.get_state()}
        if self.pool is not None and self.pool.lr is not None:
            out["pool"] = {"lr": self.pool.lr.cpu(), "gt": self.pool.gt.cpu(), "filled": self.pool.filled}
        return out

    def load_state(self, state: dict, step: int) -> None:
        self._drain()
        self.generator.set_state(state["generator"])
        if self.pool is not None and "pool" in state:
            p = state["pool"]
            self.pool.lr, self.pool.gt = p["lr"].to(self.device), p["gt"].to(self.device)
            self.pool.filled = int(p["filled"])
        self._start(step)


def hr_training_files(cfg) -> list[Path]:
    """The HR training images of an `hr_folder` config (data.root / $SAVL_DATA, folders, meta_info); a missing
    folder or list is a one-line DataError naming it and the `savl data` command that fetches it."""
    from savl.data.hr_files import training_files

    d = cfg.data
    return training_files(d.root, d.folders, d.meta_info)


def _rank_seed(seed: int, rank: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank), int(stream)]).generate_state(1)[0])


def validation_guide(valset, index: int, device) -> torch.Tensor:
    """The kernel map of item `index` of a frozen MANet-protocol set, replayed from its stored params; the
    replayed LR must equal the stored one (else the params are not those of this image)."""
    from savl.models.rrdb_sft import replayed_kernel_map

    item = valset[index]
    try:
        return replayed_kernel_map(item["hr"], item["lr"], valset.params[index]).to(device)
    except ConfigError as e:
        raise ConfigError(f"{valset.path}: {item['name']}: {e}") from None


def real_validation_set(cfg) -> list[dict]:
    """The paired real set `data.val_data` (a folder, or a catalogued name such as RealSR or DRealSR looked up in
    the data roots), every pair centre-cropped to at most `data.val_size` (HR side, LR aligned): {"lr", "hr",
    "name"} items in memory. A set without HR images, or one that is missing, is a one-line DataError."""
    from savl.data.catalog import load_catalog
    from savl.data.hr_files import data_roots, locate, missing_message
    from savl.data.resolve import open_eval_data
    from savl.errors import DataError

    d = cfg.data
    name, s = d.val_data, d.scale
    roots = data_roots(d.root if d.source == "hr_folder" else None)
    if Path(name).is_dir():
        ds, *_ = open_eval_data(name, s)
    elif name in load_catalog():
        holder = next((r for r in roots if (r / name).is_dir()), None)
        if holder is None:
            raise DataError("data.val_data: " + missing_message(name, roots))
        ds, *_ = open_eval_data(name, s, root=holder)
    else:
        hits = locate(name, roots)
        if not hits:
            raise DataError("data.val_data: " + missing_message(name, roots))
        ds, *_ = open_eval_data(str(hits[0]), s)
    items = []
    for i in range(len(ds)):
        item = ds[i]
        if "hr" not in item:
            raise DataError(f"data.val_data {name}: has no HR images to validate against (LR only)")
        lr, hr = item["lr"], item["hr"]
        pl = d.val_size // s
        h, w = lr.shape[-2:]
        ph, pw = min(pl, h), min(pl, w)
        top, left = (h - ph) // 2, (w - pw) // 2
        lr = lr[:, top : top + ph, left : left + pw]
        hr = hr[:, top * s : (top + ph) * s, left * s : (left + pw) * s]
        items.append({"lr": lr.contiguous(), "hr": hr.contiguous(), "name": str(item["name"])})
    return items


def validation_set(cfg, path: Path):
    """The validation set: the paired real set `data.val_data` when the config names one; else the frozen
    synthetic set, centre crops (val_size) of the validation photos, degraded once and stored at `path`."""
    from savl.data import FrozenValidationSet

    d = cfg.data
    if d.val_data:
        return real_validation_set(cfg)
    if d.source == "paired":
        raise ConfigError("validation on paired data is done with savl eval; set val_every null")
    names = d.val_names
    if names is None:
        pool = _images(cfg, d.names)
        chosen = pool[: d.val_count]
    else:
        chosen = _images(cfg, names)
    s = d.val_size
    crops = []
    for name, img in chosen:
        h, w = img.shape[-2:]
        if h < s or w < s:
            raise ConfigError(f"validation photo {name!r} ({w}x{h}) is smaller than data.val_size {s}")
        top, left = (h - s) // 2, (w - s) // 2
        crops.append((name, img[:, top : top + s, left : left + s].contiguous()))
    return FrozenValidationSet.load_or_build(crops, d.val_protocol, cfg.seed, path)
