"""``compare_runners`` (cvexport/compare.py): the one loop that runs a reference runner and the
runners under test on the same feeds and accumulates each one's parity statistics. The runners
here are small stand-ins with ``infer``, so the loop itself is what is tested."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.compare import compare_runners
from cvexport.tasks import get_task


class ScriptedRunner:
    """Probabilities as a function of the input; records every feed it is given."""

    def __init__(self, respond):
        self.respond = respond
        self.feeds: list[np.ndarray] = []

    def infer(self, feed):
        self.feeds.append(feed["input"])
        return {"probabilities": self.respond(feed["input"])}


def one_hot(x: np.ndarray) -> np.ndarray:
    """Class = the input's value mod 3, as probabilities [B, 3]."""
    probabilities = np.zeros((x.shape[0], 3), np.float32)
    probabilities[np.arange(x.shape[0]), x.astype(int) % 3] = 1.0
    return probabilities


def feeds(*batches: list[int]) -> list[dict[str, np.ndarray]]:
    return [{"input": np.asarray(values, np.float32)} for values in batches]


def new_parity(_name):
    return get_task("classification").new_parity("fp32")


def test_each_runner_is_compared_with_the_reference_on_the_same_feeds():
    reference, same = ScriptedRunner(one_hot), ScriptedRunner(one_hot)
    shifted = ScriptedRunner(lambda x: one_hot(x + (x == 4)))  # one image of four changes class
    batches = feeds([0, 1], [4, 5])
    parities = compare_runners({"torch": reference, "same": same, "shifted": shifted}, "torch", batches, new_parity)

    assert set(parities) == {"same", "shifted"}  # the reference is not compared with itself
    assert (parities["same"].images, parities["same"].agree) == (4, 4) and parities["same"].passed()
    assert (parities["shifted"].images, parities["shifted"].agree) == (4, 3) and not parities["shifted"].passed()
    for runner in (reference, same, shifted):  # the reference ran once per batch, as each runner did
        assert [f.tolist() for f in runner.feeds] == [[0, 1], [4, 5]]


def test_outputs_reach_the_caller_reference_first_with_their_batch():
    seen = []
    batches = [("a", feeds([1])[0]), ("b", feeds([2, 3])[0])]
    compare_runners({"torch": ScriptedRunner(one_hot), "ort": ScriptedRunner(one_hot)}, "torch", batches, new_parity,
                    feed=lambda batch: batch[1],
                    on_outputs=lambda name, batch, out: seen.append((name, batch[0], out["probabilities"].shape)))
    assert seen == [("torch", "a", (1, 3)), ("ort", "a", (1, 3)), ("torch", "b", (2, 3)), ("ort", "b", (2, 3))]


def test_no_batches_compares_nothing_and_does_not_pass():
    parities = compare_runners({"torch": ScriptedRunner(one_hot), "ort": ScriptedRunner(one_hot)}, "torch", [],
                               new_parity)
    assert parities["ort"].compared() == 0 and not parities["ort"].passed()


def test_a_reference_not_among_the_runners_is_an_error():
    with pytest.raises(ValueError, match="reference runner 'torch'"):
        compare_runners({"ort": ScriptedRunner(one_hot)}, "torch", feeds([0]), new_parity)


def test_each_runner_gets_statistics_made_for_it_by_name():
    asked = []

    def per_runner(name):
        asked.append(name)
        return get_task("classification").new_parity("int8" if name == "loose" else "fp32")

    parities = compare_runners({"torch": ScriptedRunner(one_hot), "strict": ScriptedRunner(one_hot),
                                "loose": ScriptedRunner(one_hot)}, "torch", feeds([0]), per_runner)
    assert asked == ["strict", "loose"]
    assert parities["loose"].tolerance != parities["strict"].tolerance
