"""Translation with an encoder-decoder (T5, BART):
`--config=experiments/configs/translate.py --config.model=FOLDER` fine-tunes a
seq2seq checkpoint on English -> German Multi30k (the slices shipped in
tests/data/translation; the whole set: --config.train_file=DIR/train
--config.eval_file=DIR/val, as parallel DIR/train.en and DIR/train.de).
`translate.py:scratch` trains a small BART from scratch around the tokenizer
in --config.model (experiments/train_tokenizer.py --kind=bpe).

Other data: .jsonl with --config.source_field / target_field, or
--config.tfds_dataset=wmt14_translate/de-en (--config.source_lang,
target_lang). For T5 checkpoints set --config.source_prefix="translate
English to German: ". Dev BLEU and chrF are sacreBLEU's on the generated text
(greedy; --config.num_beams=4 for beam search); workdir/predictions_<split>.jsonl
holds source, references and prediction.
"""

import pathlib

from fmt.train.config import default_config, seq2seq_scratch

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests/data/translation"


def get_config(preset: str = "finetune"):
    config = default_config()
    config.task_kind = "seq2seq_lm"
    config.model = ""  # a T5 or BART folder or hub id (t5-small, facebook/bart-base, ...)
    config.train_file = str(DATA / "train")
    config.eval_file = str(DATA / "val")
    config.source_lang, config.target_lang = "en", "de"
    config.max_seq_length = 128
    config.max_target_length = 128
    config.generation_metrics = ("bleu",)
    config.learning_rate = 1e-4
    config.weight_decay = 0.0
    config.batch_size = 32
    config.num_epochs = 3.0
    config.num_buckets = 4
    if preset == "scratch":
        seq2seq_scratch(config, positions=256, epochs=10.0)
    elif preset != "finetune":
        raise ValueError(f"translate.py:{preset}: presets are 'finetune' and 'scratch'")
    return config
