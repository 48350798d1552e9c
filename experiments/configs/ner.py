"""Token classification (NER, POS, chunking): `--config=experiments/configs/ner.py`
with --config.train_file / eval_file / test_file in CoNLL format (a token per
line, the tag in the last column, a blank line after each sentence) or jsonl
with `tokens` and `tags` lists. The tag set comes from the training file and is
saved with the model; dev/test entity F1 is seqeval's; predictions are written
per word to workdir/predictions_<split>.conll.

The defaults read the WNUT-17 slice shipped in tests/data/ner.
"""

import pathlib

from fmt.train.config import default_config

NER = pathlib.Path(__file__).resolve().parents[2] / "tests/data/ner"


def get_config():
    config = default_config()
    config.task_kind = "token_classification"
    config.train_file = str(NER / "train.conll")
    config.eval_file = str(NER / "dev.conll")
    config.max_seq_length = 128
    config.learning_rate = 5e-5
    config.num_epochs = 3.0
    config.batch_size = 16
    return config
