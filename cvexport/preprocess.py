"""Image pre-processing shared by training, the runtime and the exported graphs.

Normalization constants live here once; the uint8-NHWC graph section and the float
input contract both derive from them. A bundle's input contract is the typed
:class:`cvexport.manifest.InputContract` (its network size: ``InputContract.network_size``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from cvexport.manifest import GraphLetterbox, InputContract

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalization(contract) -> tuple[str, Sequence[float], Sequence[float], GraphLetterbox | None]:
    """(dtype, mean, std, in-graph letterbox) of ``contract``: a bundle's
    :class:`~cvexport.manifest.InputContract`, or for training and calibration, which have no
    bundle, a mapping with ``dtype``, and ``mean`` and ``std`` where the input is float (a uint8
    input is normalized by the graph; such a network letterboxes nothing)."""
    if isinstance(contract, Mapping):
        return contract["dtype"], contract.get("mean"), contract.get("std"), None
    return contract.dtype, contract.mean, contract.std, contract.letterbox


def to_network_input(frames, contract: InputContract | Mapping[str, Any]):
    """uint8 RGB frames (list of (H, W, 3), already fitted to the input size) -> the array the
    bundle's input contract asks for: uint8 NHWC as-is, or float32 NCHW normalized."""
    import numpy as np

    dtype, mean, std, _ = _normalization(contract)
    batch = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    if dtype == "uint8":
        return np.ascontiguousarray(batch)
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((x - mean) / std).astype(np.float32))


def to_float_nchw(array, contract: InputContract | Mapping[str, Any]):
    """The network input (either contract) -> torch float32 NCHW normalized, for the torch reference."""
    import numpy as np
    import torch

    dtype, mean, std, fit = _normalization(contract)
    if dtype != "uint8":
        return torch.from_numpy(np.asarray(array, dtype=np.float32))
    x = torch.from_numpy(np.asarray(array)).permute(0, 3, 1, 2).float()
    if fit is not None:
        x = letterbox_frames(x, contract)
    x = x / 255.0
    mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def letterbox_frames(frames, contract: InputContract):
    """The in-graph fit (``build --frame-size``) in torch, for the reference: float NCHW frames of
    the contract's size (0..255) -> the network size: the box prefilter of
    :func:`cvexport.images.box_prefilter`, then bilinear with half-pixel centres (ONNX Resize
    "linear" / "half_pixel", what TensorRT runs) to the size of the contract's fit
    (:meth:`cvexport.images.InputFit.place`), padded with its fill where it pads."""
    import torch
    import torch.nn.functional as F

    from cvexport.images import InputFit, box_prefilter

    how = InputFit.of(contract)
    width, height = contract.network_size
    frame_w, frame_h = int(contract.width), int(contract.height)
    new_w, new_h, pad_x, pad_y = how.place(frame_w, frame_h, width, height)
    k = box_prefilter(frame_w, frame_h, new_w, new_h)
    if k > 1:
        frames = F.avg_pool2d(frames, kernel_size=k, stride=k)
    resized = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    padding = (pad_x, width - new_w - pad_x, pad_y, height - new_h - pad_y)
    if len(set(how.fill)) == 1:
        return F.pad(resized, padding, value=float(how.fill[0]))
    fill = torch.tensor(how.fill, dtype=resized.dtype).view(1, 3, 1, 1)  # one colour per channel
    return F.pad(resized - fill, padding, value=0.0) + fill


def frame_size_note(contract: InputContract, width: int, height: int) -> str | None:
    """One line to tell the user when a frame of ``width`` x ``height`` differs from the frame
    size a ``build --frame-size`` graph was made for (None when it matches, or the graph takes
    any size). Such frames are letterboxed to the built size first and then again in the graph:
    a second resize, and a frame of another shape loses pixels to two paddings."""
    if contract.letterbox is None:
        return None
    built_w, built_h = int(contract.width), int(contract.height)
    if (int(width), int(height)) == (built_w, built_h):
        return None
    return (f"frames of {width}x{height} differ from the {built_w}x{built_h} frames this bundle was built for "
            f"(--frame-size): they are letterboxed to {built_w}x{built_h} first, which costs time and detail; "
            f"build with --frame-size {width}x{height} for this source")
