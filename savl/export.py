"""ONNX export of an SR network with dynamic height and width, checked against PyTorch (`savl export`).

The network goes through `torch.export` with symbolic height and width (multiples of the network's size
multiple: its attention window and its encoder's downsampling factor, so internal padding is a no-op), then
through torch's ONNX exporter. The exported file is then run with onnxruntime (or, when onnxruntime is not
installed, with onnx's reference evaluator) on a test image of another size than the one traced, and the
largest absolute difference from PyTorch's output is reported; above the tolerance the file is not kept.

Needs the optional `export` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from savl.errors import SavlError

EXTRA = "export"


@dataclass
class ExportReport:
    path: Path
    size_multiple: int
    scale: int
    checked_on: tuple[int, int]  # (H, W) of the LR test image
    runtime: str  # "onnxruntime" or "onnx.reference"
    max_abs_diff: float


def size_multiple(model: nn.Module) -> int:
    """The side every input must be a multiple of for the exported graph: the lcm of the attention window
    (`config.window`), the encoder's downsampling factor and a foreign model's `multiple_of` requirement."""
    m = 1
    config = getattr(model, "config", None)
    encoder = getattr(model, "encoder", None)
    descriptor = getattr(model, "descriptor", None)
    candidates = [
        getattr(config, "window", None),
        getattr(getattr(encoder, "config", None), "downsample_factor", None),
        getattr(getattr(descriptor, "size_requirements", None), "multiple_of", None),
    ]
    for v in candidates:
        if isinstance(v, int) and v > 0:
            m = math.lcm(m, v)
    return m


def _require_extra():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise SavlError(f"ONNX export needs the '{EXTRA}' extra (pip install 'savl[{EXTRA}]')") from None


def _exported_program(model: nn.Module, example: torch.Tensor, multiple: int):
    """torch.export with symbolic H and W = multiple * k, decomposed for ONNX.

    `view` on a transposed tensor is decomposed into a copying reshape: torch's own decomposition mistakes it
    for a view under symbolic shapes ("Cannot view a tensor ...", pytorch/pytorch#139508, #141107).
    """
    top = max(1, 8192 // multiple)
    h = multiple * torch.export.Dim("lr_height_blocks", min=1, max=top)
    w = multiple * torch.export.Dim("lr_width_blocks", min=1, max=top)
    name = next(iter(_forward_arg_names(model)), "x")
    try:
        ep = torch.export.export(model, (example,), dynamic_shapes={name: {2: h, 3: w}}, strict=False)
    except Exception as e:  # torch.export raises many types; the first line names the problem
        raise SavlError(f"torch.export failed: {type(e).__name__}: {_first_line(e)}") from None
    table = torch.export.default_decompositions()
    table[torch.ops.aten.view.default] = lambda x, size: torch.ops.aten._reshape_copy.default(x, size)
    return ep.run_decompositions(table)


def _forward_arg_names(model: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(model.forward).parameters]


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _run_onnx(path: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(str(path)).run(None, {"lr": x})[0], "onnx.reference"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"lr": x})[0], "onnxruntime"


def check_image(multiple: int, image: torch.Tensor | None = None) -> torch.Tensor:
    """The LR image the export is checked on (3, H, W): `image` cropped to multiples of `multiple`, else a crop
    of scikit-image's astronaut photo, 3 x 5 multiples in size (not the traced size: the check exercises the
    dynamic axes)."""
    if image is None:
        from skimage import data

        photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
        image = photo[:, 100 : 100 + 3 * multiple, 150 : 150 + 5 * multiple]
    H, W = image.shape[-2] // multiple * multiple, image.shape[-1] // multiple * multiple
    if H == 0 or W == 0:
        raise SavlError(f"the test image is smaller than the size multiple {multiple}")
    return image[:3, :H, :W].float()


@torch.no_grad()
def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    image: torch.Tensor | None = None,
    atol: float = 1e-3,
    multiple: int | None = None,
) -> ExportReport:
    """Export `model` (LR (1,3,H,W) -> SR) to ONNX with dynamic H and W, check it against PyTorch on a test image
    and write `path` only if the largest absolute difference is at most `atol`."""
    from savl.infer import model_scale
    from savl.provenance import atomic_write

    _require_extra()
    model = model.eval().cpu()
    multiple = multiple or size_multiple(model)
    scale = model_scale(model)
    example = torch.rand(1, 3, 2 * multiple, 2 * multiple, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters are chatty about internals a user cannot act on
        ep = _exported_program(model, example, multiple)
        from onnxscript.function_libs.torch_lib.ops.core import aten_reshape

        def write(tmp: str) -> None:
            try:
                torch.onnx.export(
                    ep,
                    (example,),
                    tmp,
                    input_names=["lr"],
                    output_names=["sr"],
                    dynamo=True,
                    custom_translation_table={torch.ops.aten._reshape_copy.default: aten_reshape},
                )
            except Exception as e:
                raise SavlError(f"{path}: ONNX conversion failed: {type(e).__name__}: {_first_line(e)}") from None
            _set_metadata(tmp, multiple, scale)
            lr = check_image(multiple, image)[None]
            ref = model(lr).float().numpy()
            try:
                got, runtime = _run_onnx(Path(tmp), lr.numpy())
            except Exception as e:
                raise SavlError(f"{path}: the exported graph does not run: {_first_line(e)}") from None
            if got.shape != ref.shape:
                raise SavlError(f"{path}: ONNX output {got.shape} differs from PyTorch's {ref.shape}")
            diff = float(np.abs(got - ref).max())
            if not diff <= atol:
                raise SavlError(f"{path}: ONNX differs from PyTorch by {diff:.3g} (max abs) > {atol:g}")
            report.update(checked_on=tuple(lr.shape[-2:]), runtime=runtime, max_abs_diff=diff)

        report: dict = {}
        atomic_write(path, write)
    return ExportReport(path=path, size_multiple=multiple, scale=scale, **report)


def _set_metadata(path: str, multiple: int, scale: int) -> None:
    """Record what a caller needs to feed the graph: the scale and the size multiple of H and W."""
    import onnx

    model = onnx.load(path)
    for key, value in (("savl.scale", scale), ("savl.size_multiple", multiple)):
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, path)
