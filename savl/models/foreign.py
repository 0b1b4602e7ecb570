"""Super-resolution models of other projects (Real-ESRGAN's RRDBNet, HAT, SwinIR, SPAN, ...) run through the
same tiled inference as savl's own, by way of spandrel, an optional extra (`pip install 'savl[spandrel]'`).

spandrel recognises an architecture and its hyper-parameters from the names and shapes in a state dict. The
file is read here with `torch.load(weights_only=True)` (or safetensors), never by unpickling arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from savl.errors import ModelFileError

EXTRA = "spandrel"  # the pyproject extra that installs spandrel


class ForeignSR(nn.Module):
    """An image-to-image model recognised by spandrel, as an nn.Module with `scale` (what `upscale` needs).

    spandrel pads inputs to the architecture's size requirements (e.g. a multiple of HAT's window) and crops
    the output back, so any tile size works.
    """

    def __init__(self, descriptor):
        super().__init__()
        self.descriptor = descriptor
        self.model = descriptor.model  # registered, so .to(device) moves the weights
        self.scale = int(descriptor.scale)
        self.architecture = descriptor.architecture.name
        self.supports = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.descriptor(x)


def spandrel_available() -> bool:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        return False
    return True


def load_foreign_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ForeignSR:
    """Load another project's SR weights file (.pth, .pt, .ckpt or .safetensors) through spandrel.

    Raises ModelFileError (one line) when spandrel is not installed, the file cannot be read, spandrel does not
    recognise the architecture, or the model is not a 3-channel image-to-image model.
    """
    from savl.models.io import read_state

    path = Path(path)
    try:
        import spandrel
    except ImportError:
        raise ModelFileError(
            f"{path}: not a savl model; running other projects' models needs the '{EXTRA}' extra "
            f"(pip install 'savl[{EXTRA}]')"
        ) from None
    state = spandrel.canonicalize_state_dict(read_state(path))
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise ModelFileError(f"{path}: spandrel does not recognise this architecture") from None
    except (KeyError, ValueError, RuntimeError, AssertionError) as e:
        first = (str(e).splitlines() or [""])[0]
        raise ModelFileError(f"{path}: spandrel could not build the model ({type(e).__name__}: {first})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelFileError(f"{path}: a {descriptor.architecture.name} model, not an image-to-image network")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelFileError(
            f"{path}: {descriptor.architecture.name} has {descriptor.input_channels} input / "
            f"{descriptor.output_channels} output channels; savl sr runs RGB models"
        )
    return ForeignSR(descriptor).to(torch.device(device)).eval()
