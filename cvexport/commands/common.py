"""Helpers that several commands share (kept out of ``cvexport.cli``, which imports the commands)."""

from __future__ import annotations


def vgg_weights(given: str | None):
    """The torchvision VGG-19 file to use (--vgg-weights, else the hub cache), checked key by key; None: random."""
    from cvexport.pretrained import VGG19, find_pretrained, vgg19_feature_weights

    found = find_pretrained(VGG19, given, "--vgg-weights")
    if found is not None:
        vgg19_feature_weights(found)  # refuse a file that does not fit before any work
    return found


def backend_names(values: list[str] | None, default: str = "ort") -> list[str]:
    """--backend given several times and/or as a comma list -> names in order (checked by the callee)."""
    return [name for value in (values or [default]) for name in value.split(",")]
