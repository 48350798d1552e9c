"""Your own data: `--config=experiments/configs/classify.py --config.train_file=...
--config.eval_file=... --config.text_fields=text [--config.label_field=label]`.
Files are .csv, .tsv or .jsonl; label names are read from the train file and
saved with the model."""

from fmt.train.config import default_config


def get_config():
    config = default_config()
    config.task = "custom"
    config.text_fields = ("text",)
    return config
