"""The colours results and training pictures are drawn in, shared by the deployment tasks
(annotated predictions) and training (contact sheets), so a class looks the same in both."""

from __future__ import annotations

import numpy as np

# One colour per class id (modulo the count) for boxes and their labels.
BOX_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))

# Background black, then distinct colours per class (colorized masks and overlays).
MASK_PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                         (70, 240, 240), (240, 50, 230)], dtype=np.uint8)
