"""Summarisation with an encoder-decoder (T5, BART):
`--config=experiments/configs/summarize.py --config.model=FOLDER` fine-tunes a
seq2seq checkpoint on SciTLDR-A (paper abstracts -> one-sentence TLDRs; the
slices shipped in tests/data/summarization, scored against every reference).
`summarize.py:scratch` trains a small BART from scratch around the tokenizer in
--config.model (experiments/train_tokenizer.py --kind=bpe).

Other data: .jsonl with --config.source_field / target_field (and
references_field), or --config.tfds_dataset=cnn_dailymail / xsum. For T5
checkpoints set --config.source_prefix="summarize: ". Dev ROUGE-1/2/L/Lsum are
rouge-score's (stemmed) on the generated text; workdir/predictions_<split>.jsonl
holds source, references and prediction.
"""

import pathlib

from fmt.train.config import default_config, seq2seq_scratch

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests/data/summarization"


def get_config(preset: str = "finetune"):
    config = default_config()
    config.task_kind = "seq2seq_lm"
    config.model = ""  # a T5 or BART folder or hub id (t5-small, facebook/bart-base, ...)
    config.train_file = str(DATA / "train.jsonl")
    config.eval_file = str(DATA / "validation.jsonl")
    config.source_field, config.target_field = "document", "summary"
    config.references_field = "references"
    config.max_seq_length = 512
    config.max_target_length = 64
    config.generation_metrics = ("rouge",)
    config.learning_rate = 1e-4
    config.weight_decay = 0.0
    config.batch_size = 16
    config.num_epochs = 3.0
    config.num_buckets = 4
    if preset == "scratch":
        seq2seq_scratch(config, positions=512, epochs=6.0)
    elif preset != "finetune":
        raise ValueError(f"summarize.py:{preset}: presets are 'finetune' and 'scratch'")
    return config
