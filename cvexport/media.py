"""Which files are pictures and which are videos: one list for every command that reads them.

``run``, ``stream``, ``predict`` and ``train --data`` used to keep lists of their own that
disagreed (a ``.gif`` worked in ``predict`` but not in ``stream``). Pictures are whatever
:func:`cvexport.images.load_image` (Pillow) reads; videos whatever PyAV's FFmpeg demuxes.
"""

from __future__ import annotations

from pathlib import Path

# In order of preference: a VOC image id is looked up as JPEGImages/<id><suffix> in this order.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jfif", ".gif",
                  ".pbm", ".pnm", ".tga")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".wmv", ".flv",
                  ".3gp")


def is_image_name(path: str | Path) -> bool:
    """Whether the name says picture (the file is not opened)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video_name(path: str | Path) -> bool:
    """Whether the name says video (the file is not opened)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def kind_of(path: str | Path) -> str:
    """"video" for a video's name, else "image" (a named file of another suffix is tried as a picture)."""
    return "video" if is_video_name(path) else "image"
