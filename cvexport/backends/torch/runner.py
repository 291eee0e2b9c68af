"""The PyTorch reference backend: the fp32 model the bundle was built from, plus the
reference post-processing, behind the same input/output contract as the exported graph."""

from __future__ import annotations

import numpy as np

from cvexport.bundle import Bundle
from cvexport.runtime.base import Runner


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, bundle: Bundle, threads: int | None = None, model=None):
        """``model``: the network already built from the bundle's weights (the build has it),
        used instead of loading them again."""
        super().__init__(bundle)
        import torch

        from cvexport.registry import get_spec

        # torch's thread count is process-wide: set it for this runner's life, put it back on close.
        self._previous_threads = torch.get_num_threads() if threads else None
        if threads:
            torch.set_num_threads(threads)
        spec = get_spec(bundle.manifest.model)
        self.model = model if model is not None else spec.load_model(bundle.verify_file("weights"))
        from cvexport.tasks import get_task

        self.task = get_task(bundle.task)

    def close(self) -> None:
        if self._previous_threads is not None:
            import torch

            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None

    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        return self.task.reference_outputs(self.model, array, self.bundle.manifest)
