"""Image pre-processing shared by training, the runtime and the exported graphs.

Normalization constants live here once; the uint8-NHWC graph section and the float
input contract both derive from them.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_network_input(frames, contract: dict):
    """uint8 RGB frames (list of (H, W, 3), already fitted to the input size) -> the array the
    bundle's input contract asks for: uint8 NHWC as-is, or float32 NCHW normalized."""
    import numpy as np

    batch = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    if contract["dtype"] == "uint8":
        return np.ascontiguousarray(batch)
    mean = np.asarray(contract["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(contract["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((x - mean) / std).astype(np.float32))


def to_float_nchw(array, contract: dict):
    """The network input (either contract) -> torch float32 NCHW normalized, for the torch reference."""
    import numpy as np
    import torch

    if contract["dtype"] != "uint8":
        return torch.from_numpy(np.asarray(array, dtype=np.float32))
    x = torch.from_numpy(np.asarray(array)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(contract["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(contract["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std
