"""What a model spec states as data (cvexport/registry.py): the input sides its network takes,
its training recipe loaded only when asked for, and a registry cheap enough to list models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvexport.registry import get_spec, list_models

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, side, rule", [
    ("ssd", 64, None), ("ssd", 1024, None), ("ssd", 32, "a multiple of 32 in 64..1024"),
    ("ssd", 100, "a multiple of 32 in 64..1024"), ("ssd", 1056, "a multiple of 32 in 64..1024"),
    ("fcn", 32, None), ("fcn", 70, "a multiple of 32 in 32..1024"), ("fcn", True, "a multiple of 32 in 32..1024"),
    ("classifier", 33, None), ("classifier", 31, "in 32..1024"), ("classifier", "64", "in 32..1024"),
    ("style", 1024, None), ("style", 1025, "in 32..1024"),
])
def test_input_side_rule_comes_from_the_specs_data(name, side, rule):
    assert get_spec(name).input_side_rule(side) == rule


@pytest.mark.parametrize("name", list_models())
def test_trainer_loads_a_recipe_with_the_calls_train_model_makes(name):
    recipe = get_spec(name).trainer()
    assert all(callable(getattr(recipe, call, None)) for call in ("default_config", "train", "save_weights"))
    assert recipe.__name__ == f"cvexport.models.{name}_training"


def test_listing_models_and_looking_up_training_hooks_import_no_torch():
    # A fresh interpreter: this one has torch loaded by other tests.
    code = ("import sys; import cvexport.registry as r; import cvexport.models.training_tasks.registry; "
            "import cvexport.models.user_datasets; assert r.list_models(); print(sorted(m for m in ('torch', "
            "'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"
