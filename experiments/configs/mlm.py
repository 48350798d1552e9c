"""Masked-LM pretraining: `--config=experiments/configs/mlm.py` continues pretraining
a checkpoint (domain-adaptive) on your texts; `mlm.py:scratch` pretrains a new
BERT-Mini-sized model (4 layers, hidden 256) around a tokenizer trained with
experiments/train_tokenizer.py (pass its folder as --config.model).

Texts: --config.train_file=.txt (a text per line) or .jsonl (--config.text_field),
or --config.tfds_dataset=NAME; without --config.eval_file a held-out share
(--config.eval_fraction) is evaluated. The defaults read the Tiny Shakespeare
slice shipped in tests/data/text. The exported model (workdir/model) is a
*ForMaskedLM folder that works as --config.model for classification and NER.
"""

import pathlib

from fmt.train.config import default_config

TEXT = pathlib.Path(__file__).resolve().parents[2] / "tests/data/text/tinyshakespeare_first3000.txt"


def get_config(preset: str = "continue"):
    config = default_config()
    config.task_kind = "masked_lm"
    config.train_file = str(TEXT)
    config.text_mode = "block"
    config.max_seq_length = 128
    config.num_epochs = 1.0
    config.learning_rate = 5e-5
    config.early_stopping_metric = ""
    if preset == "scratch":
        config.from_scratch = True
        config.model = ""  # the folder that experiments/train_tokenizer.py wrote
        config.learning_rate = 5e-4
        config.warmup_ratio = 0.06
        config.num_epochs = 10.0
        config.dropout = 0.1
    elif preset != "continue":
        raise ValueError(f"mlm.py:{preset}: presets are 'continue' and 'scratch'")
    return config
