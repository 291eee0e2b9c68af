"""Multi-object tracking: identities for a detector's boxes across the frames of one video."""

from cvexport.tracking.tracker import Tracker

__all__ = ["Tracker"]
