"""CPU training speed options: prefetching the next batch on a background thread (config `prefetch`) changes no
batch, no record and no weight, and a checkpoint written while a batch is being prefetched resumes exactly;
channels-last weights (config `channels_last`, on by default on the CPU) compute the same run to float rounding,
write contiguous model files and are not part of the run's identity."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from savl.models.io import load_model
from savl.train import load_config, train
from savl.train.config import config_hash
from savl.train.data import BatchSource
from savl.train.loop import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]
REPRESENTATION = ROOT / "configs" / "smoke" / "representation.yaml"
FAST = ["data.names=[astronaut]", "progress=none", "val_every=null", "log_every=1", "threads=1"]


def _cfg(tmp_path, *extra):
    return load_config(REPRESENTATION, [*FAST, f"output={tmp_path}", *extra])


def test_prefetch_by_default_only_with_one_thread_and_a_spare_core(tmp_path, monkeypatch):
    """With as many threads as cores the background batch competes with the step (slower on 2 idle cores), so
    the default prefetches only at one thread on a machine with another core."""
    cfg, cpu = _cfg(tmp_path), torch.device("cpu")
    assert cfg.prefetch is None
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("os.cpu_count", lambda: 2)
        torch.set_num_threads(1)
        assert BatchSource(cfg, 0, 1, cpu, prefetch=cfg.prefetch).prefetch
        torch.set_num_threads(2)
        assert not BatchSource(cfg, 0, 1, cpu, prefetch=cfg.prefetch).prefetch
        monkeypatch.setattr("os.cpu_count", lambda: 1)
        torch.set_num_threads(1)
        assert not BatchSource(cfg, 0, 1, cpu, prefetch=cfg.prefetch).prefetch
    finally:
        torch.set_num_threads(before)


def _batches(source, n, more=False):
    """n batches; the last one starts making the next only if `more`."""
    return [source.next(ahead=more or i + 1 < n) for i in range(n)]


def _equal(a, b):
    return all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))


def test_prefetched_batches_and_the_checkpointed_stream_are_those_made_in_turn(tmp_path):
    cfg = _cfg(tmp_path)
    cpu = torch.device("cpu")
    plain = BatchSource(cfg, 0, 1, cpu, prefetch=False)
    assert not plain.prefetch
    reference = _batches(plain, 5)
    ahead = BatchSource(cfg, 0, 1, cpu, prefetch=True)
    assert ahead.prefetch
    got = _batches(ahead, 2, more=True)  # the third batch is being made now
    assert ahead._pending is not None
    ahead._pending.exception()  # wait until it is made: the generator has moved past the third batch's draws
    state = ahead.state()  # the generator as it stood after the second batch, not after the third
    got += _batches(ahead, 3)
    ahead.close()
    assert all(_equal(a, b) for a, b in zip(got, reference))
    resumed = BatchSource(cfg, 0, 1, cpu, prefetch=True)
    resumed.load_state(state, 2)
    assert all(_equal(a, b) for a, b in zip(_batches(resumed, 3), reference[2:]))
    resumed.close()
    # a pool (whose contents a checkpoint would have to copy) turns it off
    assert not BatchSource(_cfg(tmp_path, "data.pool_size=4"), 0, 1, cpu, prefetch=True).prefetch


def _weights(run):
    return load_file(str(run.final / "savl.safetensors"))


def _records(run):
    skip = {"images_per_s", "s_per_step", "cpu_s_per_step"}
    return [{k: v for k, v in r.items() if k not in skip} for r in run.metrics]


@pytest.mark.slow
def test_training_with_prefetch_gives_the_same_run_and_resumes_exactly(tmp_path):
    common = ["schedule.iterations=4", "checkpoint_every=2", "prefetch=true"]
    on = train(_cfg(tmp_path, *common, "name=ahead"))
    off = train(_cfg(tmp_path, *common[:2], "name=plain", "prefetch=false"))
    assert _records(on) == _records(off) and len(_records(on)) == 4
    a, b = _weights(on), _weights(off)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Stopped at step 3, after the step-2 checkpoint was written while batch 3 was being prefetched; resumed.
    with pytest.raises(NonFiniteLossError):
        train(_cfg(tmp_path, *common, "name=cut", "debug.nan_at_step=3"))
    cut = train(_cfg(tmp_path, *common, "name=cut"), resume=True)
    assert _records(cut) == _records(on)
    c = _weights(cut)
    assert all(torch.equal(a[k], c[k]) for k in a)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_channels_last_weights_train_the_same_run_and_save_contiguous_files(tmp_path, monkeypatch):
    from savl.models.decoder import Decoder

    seen = []
    forward = Decoder.forward_with_scale

    def spy(self, hr, code):
        seen.append(self.head.weight.is_contiguous(memory_format=torch.channels_last))
        return forward(self, hr, code)

    monkeypatch.setattr(Decoder, "forward_with_scale", spy)
    default = train(_cfg(tmp_path, "schedule.iterations=3", "name=default"))
    assert seen and all(seen)  # unset on the CPU: on
    seen.clear()
    plain = train(_cfg(tmp_path, "schedule.iterations=3", "name=plain", "channels_last=false"))
    assert seen and not any(seen)
    for a, b in zip(_records(default), _records(plain)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    saved = load_file(str(default.final / "savl.safetensors"))
    assert all(t.is_contiguous() for t in saved.values())
    assert isinstance(load_model(default.final / "savl.safetensors"), torch.nn.Module)
    cfg = _cfg(tmp_path, "channels_last=true")
    assert config_hash(cfg) == config_hash(_cfg(tmp_path, "channels_last=false")) == config_hash(_cfg(tmp_path))
