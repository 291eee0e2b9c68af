"""One interface for comparing two runs of the same bundle, whatever the task.

``build`` (its parity report), ``verify``, the parity tests and the GPU tests all compare a
test run against a reference run, both in the bundle's output contract, the same way::

    parity = task.new_parity(precision, bundle.manifest)  # the task's statistics, bound to its tolerance
    for reference, test in batches:                        # (and to the bundle's settings, e.g. its score threshold)
        parity.add(reference, test)
    parity.passed(), parity.summary(), parity.to_dict()

:func:`compare_runners` is that loop over live runners, for every caller that has them: it runs
each feed through the reference runner once and through every runner under test, and returns
one ``Parity`` per runner (the comparison stays data; the caller judges and reports it).

Each task defines its statistics as a ``Parity`` subclass and its tolerances per precision as
data, next to the rest of what it knows (detection: detections matched as sets; classification:
top-1 agreement; segmentation: pixel agreement; style: PSNR). A mismatch is reported, never skipped,
and statistics that compared nothing never pass (``compared``): a check of nothing proves nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

import numpy as np

Batch = TypeVar("Batch")
Outputs = Mapping[str, np.ndarray]

# Failure messages a summary shows before "... (N more)".
FAILURES_SHOWN = 3


@dataclass
class Parity:
    """Statistics of test outputs against reference outputs, accumulated batch by batch.

    ``tolerance`` is the task's tolerance for the precision under test (``task.new_parity``
    binds it); ``passed`` may be asked against another one. Subclasses add their counters and
    a ``failures`` list (structural problems: a failure is never a pass)."""

    tolerance: Any = field(default=None, repr=False)

    def add(self, reference: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> "Parity":
        """Accumulate one batch of outputs; returns ``self``."""
        raise NotImplementedError

    def passed(self, tolerance: Any = None) -> bool:
        """Within ``tolerance`` (default: the bound one), no failure, and something was compared."""
        # The tolerance is consulted first, so one of another task is an error, never a quiet False.
        within = self.within(self._tolerance(tolerance))
        return within and not self.failures and self.compared() > 0

    def within(self, tolerance: Any) -> bool:
        """The task's statistics against its tolerance (``passed`` adds the checks every task shares)."""
        raise NotImplementedError

    def compared(self) -> int:
        """How many things were compared (detections, images, pixels)."""
        raise NotImplementedError

    def empty_reason(self) -> str:
        """Why nothing was compared, in the task's words (a summary says it)."""
        return f"no outputs over {getattr(self, 'images', 0)} images"

    def nothing_compared(self) -> str:
        """What a summary adds when nothing was compared ("" when something was)."""
        return "" if self.compared() else f"; nothing compared ({self.empty_reason()}), so this check proves nothing"

    def summary(self) -> str:
        raise NotImplementedError

    def derived(self) -> dict[str, Any]:
        """Statistics computed from the counters, reported next to them."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("tolerance")
        return {**out, **self.derived(), "compared": self.compared()}

    def _tolerance(self, given: Any) -> Any:
        tolerance = given if given is not None else self.tolerance
        if tolerance is None:
            raise ValueError("no tolerance: pass one, or create the statistics with task.new_parity(precision)")
        return tolerance


def shapes_differ(parity: Parity, name: str, reference: np.ndarray, test: np.ndarray) -> bool:
    """Record a failure and say so when output ``name`` has another shape in the two runs."""
    if reference.shape == test.shape:
        return False
    parity.failures.append(f"{name} shape differs: {list(reference.shape)} vs {list(test.shape)}")
    return True


def compare_runners(runners: Mapping[str, Any], reference: str, batches: Iterable[Batch],
                    new_parity: Callable[[str], Parity], *,
                    feed: Callable[[Batch], Mapping[str, np.ndarray]] = lambda batch: batch,
                    on_outputs: Callable[[str, Batch, Outputs], None] | None = None) -> dict[str, Parity]:
    """Each runner's outputs against the ``reference`` runner's on the same feeds.

    ``runners``: name -> anything with ``infer(feed) -> outputs`` (a :class:`cvexport.runtime.base.Runner`),
    the reference among them. Each of ``batches`` is fed (``feed(batch)``: its input dict; by default
    the batch is the feed) to the reference once and then to every other runner, in ``runners``'
    order; ``new_parity(name)`` makes each runner's statistics (``task.new_parity(precision, manifest)``, the
    precision the runner is judged at),
    and each batch's outputs are added to them. ``on_outputs(name, batch, outputs)``, when given,
    sees every runner's outputs of every batch, the reference's first (``verify`` turns them into
    predictions for the task metric). Returns name -> ``Parity`` for every runner but the reference.
    """
    if reference not in runners:
        raise ValueError(f"reference runner {reference!r} is not among the runners {sorted(runners)}")
    parities = {name: new_parity(name) for name in runners if name != reference}
    for batch in batches:
        inputs = feed(batch)
        expected = runners[reference].infer(inputs)
        if on_outputs is not None:
            on_outputs(reference, batch, expected)
        for name, parity in parities.items():
            outputs = runners[name].infer(inputs)
            parity.add(expected, outputs)
            if on_outputs is not None:
                on_outputs(name, batch, outputs)
    return parities
