"""Argument types the command line and the tasks' own build options share (argparse ``type=``)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number >= 1, or argparse's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def pixels(text: str) -> float:
    """A distance in pixels, 0 or more, or argparse's one-line usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of pixels") from None
    if not value >= 0 or value == float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} must be a finite number of pixels, 0 or more")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. 1280x720) -> (width, height), or argparse's one-line usage error."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT, e.g. 1280x720")
    width, height = (int(p) for p in parts)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"{width}x{height} is outside 16..8192 pixels per side")
    return width, height
