r"""Write targets for new sources with a seq2seq model (experiments/predict.py
with a T5/BART `*ForConditionalGeneration` model, or a decoder fine-tuned by
the seq2seq kind).

The sources (a .jsonl file's `source_field`, or any other text file, one
source per line) go through the seq2seq kind's own `featurize`, evaluation's
batches and step, and its generation (greedy or beam search, as configured):
so a source gets the text that a run's `predictions_<split>.jsonl` gives it
with the same settings. A .jsonl output keeps every input field and adds
`prediction`; any other output gets one prediction per line.
"""

import json
import pathlib

from fmt import model as model_lib
from fmt.data import batching
from fmt.data.rows import jsonl_rows, read_text
from fmt.data.seq2seq import text_lines
from fmt.errors import UserError
from fmt.files import write_text_atomic
from fmt.tasks.seq2seq import Seq2SeqLM
from fmt.train.config import default_config
from fmt.train.evaluation import model_outputs


def generate_file(folder: str, input_path: str, output_path: str, *, source_field="source",
                  source_prefix: str = "", batch_size: int = 64, max_seq_length: int = 512,
                  max_new_tokens: int = 128, num_beams: int = 1, length_penalty: float = 1.0,
                  no_repeat_ngram_size: int = 0, min_length: int = 0,
                  progress: bool = True) -> list[str]:
    """Generate a target for every source of `input_path` into `output_path`."""
    model = model_lib.from_pretrained(str(pathlib.Path(folder).expanduser()), task="seq2seq_lm")
    if model.loading_info["missing_keys"]:
        raise UserError(f"--model={folder} is missing weights ("
                        f"{', '.join(model.loading_info['missing_keys'][:2])}); pass the model/ "
                        "folder of a finetune.py run with a seq2seq config")
    max_seq_length = min(max_seq_length, model.max_positions)
    config = default_config()
    config.update(task_kind="seq2seq_lm", source_prefix=source_prefix,
                  max_seq_length=max_seq_length, max_target_length=max_new_tokens,
                  num_beams=num_beams, length_penalty=length_penalty,
                  no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length)
    task = Seq2SeqLM(config)
    rows = _sources(input_path, source_field)
    # The target is not known: an empty one keeps featurize's shapes (and costs nothing).
    features = task.featurize(model, [{"source": s, "target": ""} for _, s in rows], "predict",
                              input_path)
    outputs = model_outputs(model, task, features, batch_size,
                            batching.bucket_lengths(max_seq_length), progress,
                            pathlib.Path(input_path).name)
    texts = task.texts(outputs)
    if output_path.endswith(".jsonl"):
        body = "".join(json.dumps({**row, "prediction": text}, ensure_ascii=False) + "\n"
                       for (row, _), text in zip(rows, texts))
    else:
        body = "".join(text.replace("\n", " ") + "\n" for text in texts)
    write_text_atomic(output_path, body)
    return texts


def _sources(path: str, field: str) -> list[tuple[dict, str]]:
    """(row to write back, source text) per example: a .jsonl file's rows, or the
    lines of any other text file."""
    if path.endswith(".jsonl"):
        rows = []
        text = read_text(path, empty="file is empty; it needs one source per line")
        for number, row in jsonl_rows(path, text):
            source = row.get(field)
            if not isinstance(source, str) or not source.strip():
                raise UserError(f"{path}:{number}: no source text in field {field!r}; name the "
                                "field with --source_field")
            rows.append((row, source))
        return rows
    lines = text_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise UserError(f"{path}:{number}: empty line; write one source per line")
    return [({"source": line}, line) for line in lines]
