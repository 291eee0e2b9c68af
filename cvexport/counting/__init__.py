"""Counting over tracked detections: crossings of lines, entries and occupancy of zones.

Pure numpy over ``cvexport.results.Detections`` with track ids; a stream feeds each frame's
detections and its time, and writes the event records that come back. Semantics: docs/counting.md.
"""

from cvexport.counting.geometry import FrameShape, bottom_centres, parse_line, parse_zone
from cvexport.counting.lines import LineCounter
from cvexport.counting.zones import ZoneCounter

__all__ = ["FrameShape", "LineCounter", "ZoneCounter", "bottom_centres", "parse_line", "parse_zone"]
