r"""The paper's table from finished runs: the best setting on dev, mean ± std over seeds.

  python experiments/table.py runs/rte_sweep
  python experiments/table.py runs/bert --reference=bert            # published numbers
  python experiments/table.py runs/protocol/fmt --reference=runs/protocol/torch \
      --labels=fmt,PyTorch --plots

Each DIR (a sweep's --workdir with its sweep.json, or any folder of run workdirs)
is one system: per task, the setting with the best mean main metric on dev
(CoLA MCC, SST-2 accuracy, MRPC F1, STS-B Pearson, ..., entity F1 for NER,
perplexity for masked-LM), then every metric's mean ± std over that setting's
seeds, and its best seed. --reference adds published numbers
(experiments/configs/paper/NAME.py, NAME:VARIANT) or another folder of runs, and
the difference to them. Prints Markdown; writes table.md and table.csv (and with
--plots, PNGs in plots/) to --out, the first DIR by default.
"""

import csv
import io
import pathlib
import sys

from absl import app, flags

HERE = pathlib.Path(__file__).resolve().parent
PAPERS = HERE / "configs" / "paper"
_REFERENCE = flags.DEFINE_string("reference", None, "Published numbers (NAME or NAME:VARIANT "
                                 "of experiments/configs/paper/) or a folder of runs.")
_LABELS = flags.DEFINE_list("labels", None, "Row labels of the DIRs (then the reference "
                            "folder's); default: the folder names.")
_OUT = flags.DEFINE_string("out", None, "Where table.md, table.csv and plots/ go (default: "
                           "the first DIR).")
_METRICS = flags.DEFINE_list("metrics", [], "Further metrics to show for non-GLUE tasks "
                             "(their main metric always shows).")
_PLOTS = flags.DEFINE_bool("plots", False, "Learning curves, a heatmap of a 2-D grid and the "
                           "seed spread, as PNG.")
_BEST = flags.DEFINE_bool("best_seed", True, "Add each system's best-seed row.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks for errors in input.")


def published(name: str):
    """The reference row of experiments/configs/paper/NAME.py's PUBLISHED[VARIANT]."""
    from fmt.errors import UserError
    from fmt.report import table
    module_name, _, variant = name.partition(":")
    path = PAPERS / f"{module_name}.py"
    known = sorted(p.stem for p in PAPERS.glob("*.py"))
    if not path.is_file():
        raise UserError(f"--reference={name}: no folder of runs and no protocol {path}; "
                        f"pass a folder or one of: {', '.join(known)}")
    from fmt.train.cli import config_module
    module = config_module(str(path))
    numbers = getattr(module, "PUBLISHED", {})
    if not numbers:
        raise UserError(f"--reference={name}: {path} publishes no numbers (no PUBLISHED); "
                        f"pass a folder of runs to compare with instead")
    variant = variant or next(iter(numbers))
    if variant not in numbers:
        raise UserError(f"--reference={name}: {path} has no {variant!r}; use one of: "
                        f"{', '.join(f'{module_name}:{v}' for v in numbers)}")
    entry = numbers[variant]
    return table.published_row(entry["label"], entry["scores"], entry["source"])


def build(folders: list[str], labels: list[str], reference: str | None):
    """(rows, columns, selection lines, summaries per system)."""
    from fmt.errors import UserError
    from fmt.report import runs, table
    systems = {}
    for i, folder in enumerate(folders):
        records = runs.collect(folder)
        if not records:
            raise UserError(f"{folder}: no finished runs (no results.json) in it yet")
        label = labels[i] if i < len(labels) else pathlib.Path(folder).name
        systems[label] = runs.select(records)
    rows, notes, grids, reference_rows = [], [], [], []
    for label, summaries in systems.items():
        rows += table.system_rows(label, summaries, best=_BEST.value)
        notes += table.selection_lines(label, summaries)
        grids += table.settings_lines(label, summaries)
    summaries_all = list(systems.values())
    if reference:
        if pathlib.Path(reference).is_dir():
            label = labels[len(folders)] if len(labels) > len(folders) else \
                pathlib.Path(reference).name
            chosen = runs.select(runs.collect(reference))
            reference_row = table.system_rows(label, chosen, best=False)[0]
            reference_row.kind = "reference"
            notes += table.selection_lines(label, chosen)
            summaries_all.append(chosen)
            systems[label] = chosen  # plotted beside the others
        else:
            reference_row = published(reference)
            notes.append(f"- {reference_row.label}: {reference_row.note}")
        reference_rows = [reference_row] + [table.delta_row(r, reference_row)
                                            for r in rows if r.kind == "mean"]
    columns = table.columns(table.task_metrics(summaries_all), tuple(_METRICS.value))
    if grids:
        notes += ["", "Every setting (dev main metric, mean ± std (runs)):", *grids]
    return rows + reference_rows, columns, notes, systems


def main(argv):
    from fmt.errors import UserError
    from fmt.report import table
    folders = argv[1:]
    try:
        if not folders:
            raise UserError("give one or more folders of runs: python experiments/table.py DIR")
        rows, columns, notes, systems = build(folders, _LABELS.value or [], _REFERENCE.value)
        out = pathlib.Path(_OUT.value or folders[0])
        text = table.markdown(rows, columns)
        text += ("\n\nMean ± sample std over the selected setting's runs (seeds, folds); "
                 "dev set; percentages.\nSelected:\n" + "\n".join(notes) + "\n")
        print(text, end="")
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text, encoding="utf-8")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(table.csv_rows(rows, columns))
        (out / "table.csv").write_text(buffer.getvalue(), encoding="utf-8")
        if _PLOTS.value:
            from fmt.report import plots
            written = plots.write_all(systems, out / "plots")
            print("plots: " + ", ".join(str(p) for p in written))
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
