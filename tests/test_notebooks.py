"""The Colab notebooks, executed top to bottom on CPU as a user would run them.

Each runs in a kernel of this interpreter with the repository root as its working
directory, after a cell of tiny parameters injected below its `parameters` cell the way
papermill does it (no install, the shipped GLUE slices, the random tiny BERT, a few
steps). A failing cell fails the test with that cell's error.
"""

import json
import os
import sys

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from conftest import GLUE, ROOT

COLAB = ROOT / "colab"


def inject_parameters(notebook, parameters: dict) -> None:
    """Add a cell assigning `parameters` right after the cell tagged `parameters`."""
    index = next(i for i, cell in enumerate(notebook.cells)
                 if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, id="injected-parameters")
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, cell)


def execute(name: str, parameters: dict):
    """Run colab/`name` with `parameters`; the executed notebook, outputs and all."""
    notebook = nbformat.read(COLAB / name, as_version=4)
    inject_parameters(notebook, parameters)
    # Only the native "python3" kernel: ipykernel in this very interpreter, whatever
    # kernelspecs the machine has installed elsewhere (a "python3" in ~/.local/share/jupyter
    # may point at another Python without fmt).
    kernel = KernelManager(kernel_name="python3",
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    assert kernel.kernel_spec.argv[0] == sys.executable
    client = NotebookClient(notebook, km=kernel, timeout=600,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    return notebook


def cell(notebook, cell_id: str):
    return next(cell for cell in notebook.cells if cell.get("id") == cell_id)


def cell_text(notebook, cell_id: str) -> str:
    """The text a cell printed to stdout or displayed (not its warnings and progress bars)."""
    parts = []
    for output in cell(notebook, cell_id).outputs:
        if output.output_type == "stream":
            parts.append(output.text if output.name == "stdout" else "")
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def displays(notebook, cell_id: str, mime: str) -> bool:
    return any(mime in output.get("data", {}) for output in cell(notebook, cell_id).outputs)


def test_notebooks_are_clean():
    """Stored without outputs, so that diffs show only what a person wrote."""
    for path in sorted(COLAB.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: one cell tagged 'parameters'"
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, \
                    f"{path.name}: cell {cell.id} has stored outputs"


def test_quickstart(tiny_model, tmp_path):
    workdir = tmp_path / "sst2"
    notebook = execute("quickstart.ipynb", {
        "INSTALL": False, "DATA_DIR": str(GLUE), "MODEL": str(tiny_model),
        "MAX_TRAIN_EXAMPLES": 64, "MAX_STEPS": 4, "BATCH_SIZE": 16, "EVAL_EVERY_STEPS": 2,
        "EXTRA_FLAGS": ["--config.max_eval_examples=64"], "WORKDIR": str(workdir)})

    results = json.loads((workdir / "results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0
    assert results["step"] == 4
    assert '"accuracy"' in cell_text(notebook, "results")
    assert "cpu" in cell_text(notebook, "accelerator").lower()
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval_accuracy" in r for r in records) >= 2  # points of the dev curve
    assert displays(notebook, "curves", "image/png"), "the learning curves were not drawn"
    printed = cell_text(notebook, "pipeline").splitlines()
    assert len(printed) == 2, printed
    for line in printed:
        assert line.split()[0] in ("negative", "positive"), line


def test_reproduce_glue(tiny_model, tmp_path):
    workdir = tmp_path / "sweep"
    notebook = execute("reproduce_glue.ipynb", {
        "INSTALL": False, "DATA_DIR": str(GLUE), "MODEL": str(tiny_model),
        "CONFIG": "experiments/configs/glue.py:rte", "TASKS": "rte",
        "GRID": "learning_rate=1e-4,5e-5", "SEEDS": "0", "MAX_STEPS": 2,
        "MAX_TRAIN_EXAMPLES": 32, "MAX_EVAL_EXAMPLES": 32, "WITH_PYTORCH": False,
        # The two runs side by side where there are two cores, each on one.
        "PARALLEL": min(2, len(os.sched_getaffinity(0))),
        "EXTRA_FLAGS": ["--config.batch_size=16"], "WORKDIR": str(workdir)})

    sweep = json.loads((workdir / "sweep.json").read_text())
    assert [run["status"] for run in sweep["runs"]] == ["done", "done"]
    for run in sweep["runs"]:
        results = json.loads((workdir / run["workdir"] / "results.json").read_text())
        assert 0.0 <= results["accuracy"] <= 1.0
    table = (workdir / "table.md").read_text()
    assert "rte" in table.lower() and "learning_rate" in table, table
    assert (workdir / "table.csv").is_file()
    plots = sorted((workdir / "plots").glob("*.png"))
    assert plots, "table.py --plots wrote no PNG"
    assert displays(notebook, "table", "text/markdown")
    assert displays(notebook, "plots", "image/png")
