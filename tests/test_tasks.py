"""The task interface: classification on it gives what the code before it gave,
and each kind's loss and eval reductions do what the loop relies on."""

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests/tools"))
import make_classification_reference as reference  # noqa: E402

RECORDED = json.loads((ROOT / "tests/data/reference/classification.json").read_text())


@pytest.mark.parametrize("name", [name for name, _, _ in reference.RUNS])
def test_classification_matches_the_pre_task_code(name, tmp_path):
    """Train losses within 1e-6 and the same dev metrics as commit 233423f gave
    (recorded by tests/tools/make_classification_reference.py)."""
    _, config, overrides = next(run for run in reference.RUNS if run[0] == name)
    assert RECORDED[name]["overrides"] == overrides
    got = reference.run(name, config, overrides, tmp_path / name)
    want = RECORDED[name]
    assert len(got["train_losses"]) == len(want["train_losses"])
    assert max(abs(a - b) for a, b in zip(got["train_losses"], want["train_losses"])) <= 1e-6
    assert got["results"].keys() == want["results"].keys()
    for key, value in want["results"].items():
        assert got["results"][key] == pytest.approx(value, abs=1e-6), key
