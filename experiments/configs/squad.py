"""Extractive question answering: `--config=experiments/configs/squad.py` with
--config.train_file / eval_file in the SQuAD .json format (v1.1 or v2.0) or
.jsonl with question, context and answers; or --config.tfds_dataset=squad/v1.1
(squad/v2.0 with `:v2`). Contexts longer than max_seq_length are cut into
windows sharing doc_stride tokens; dev EM/F1 are the official script's, and
workdir/predictions_<split>.json holds id -> answer (v2 also null_odds).

The defaults, BERT's SQuAD settings (Devlin et al. 2019: 384 tokens, stride
128, lr 3e-5, batch 32, 2 epochs), read the slices shipped in tests/data/squad.
`:v2` turns on no-answer questions (--config.version_2_with_negative).
"""

import pathlib

from fmt.train.config import default_config

SQUAD = pathlib.Path(__file__).resolve().parents[2] / "tests/data/squad"


def get_config(version: str = "v1"):
    config = default_config()
    config.task_kind = "question_answering"
    config.train_file = str(SQUAD / "train.json")
    config.eval_file = str(SQUAD / "dev.json")
    config.max_seq_length = 384
    config.doc_stride = 128
    config.learning_rate = 3e-5
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_epochs = 2.0
    if version == "v2":
        config.version_2_with_negative = True
    elif version != "v1":
        raise ValueError(f"squad.py:{version}: versions are 'v1' and 'v2'")
    return config
