"""Deterministic, non-flat weights for torchvision's detectors (nothing can be downloaded).

Randomly initialised torchvision detectors give flat scores: their backbones shrink
activations layer by layer, and their class heads start from a prior bias, so every score ties
and parity would compare tie-breaking, not post-processing. These weights keep activations
alive (fan-in scaled convolutions) and scale the last layers of the class and box heads so the
scores spread over 0..1 and the boxes move away from their anchors; the background column of a
sigmoid head is pushed far down, as training does (torchvision never labels anything 0).
"""

from __future__ import annotations

import torch

LOGIT_STD = 2.0
OFFSET_STD = 0.5


def _last_conv(module: torch.nn.Module) -> torch.nn.Conv2d:
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)][-1]


def detector_test_weights(model, side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` (a cvexport.torchvision_detectors core) with test weights."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    head = model.head
    class_convs = ([_last_conv(m) for m in head.classification_head.module_list]
                   if hasattr(head.classification_head, "module_list") else [head.classification_head.cls_logits])
    box_convs = ([_last_conv(m) for m in head.regression_head.module_list]
                 if hasattr(head.regression_head, "module_list") else [head.regression_head.bbox_reg])
    images = torch.rand((2, 3, side, side), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        outputs = model(images)
        for convs, output, target in ((class_convs, outputs[0], LOGIT_STD), (box_convs, outputs[1], OFFSET_STD)):
            scale = target / max(float(output.std()), 1e-12)
            for conv in convs:
                conv.weight.mul_(scale)
        if getattr(head.classification_head, "cls_logits", None) is not None:  # sigmoid heads
            conv = head.classification_head.cls_logits
            classes = head.classification_head.num_classes
            conv.bias.fill_(-1.0)
            conv.bias[::classes] = -30.0  # the background column: never a positive in training
    return {k: v.clone() for k, v in model.state_dict().items()}


def zoo_weights_file(name: str, side: int, directory, classes: int = 3, seed: int = 0):
    """A torchvision builder's state dict with test weights saved as ``directory/NAME.pth`` for
    ``classes`` classes (a detector's background not counted): detectors as above, classifiers
    and segmenters from a fixed seed (their outputs are not flat)."""
    from cvexport.torchvision_zoo import build_network
    from cvexport.registry import get_spec

    detector = get_spec(name).task == "detection"
    torch.manual_seed(seed)
    model = build_network(name, classes + 1 if detector else classes, side)
    state = detector_test_weights(model, side, seed) if detector else model.state_dict()
    path = directory / f"{name}.pth"
    torch.save(state, path)
    return path
