"""The post-processing settings TinySSD bundles are built with (the ``ssd`` spec's ``defaults``).

A module of their own, free of torch, so the registry (which loads the SSD's training recipe
when asked) and that recipe (which evaluates at these settings) share one definition without
importing each other.
"""

# NMS IoU 0.35: best mean mAP over square and letterboxed views on a tuning split
# (benchmarks/nms_iou_sweep.py); 0.45 kept partial boxes beside whole ones.
BUNDLE_DEFAULTS = {"score_threshold": 0.25, "iou_threshold": 0.35, "max_detections": 100}
