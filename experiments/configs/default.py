"""The embedded default: all-MiniLM-L6-v2 on the real SST-2 slice shipped in
tests/data (4,000 train sentences, the full 872-sentence dev set), one epoch."""

import pathlib

from fmt.train.config import default_config


def get_config():
    config = default_config()
    config.task = "sst2"
    config.data_dir = str(pathlib.Path(__file__).resolve().parents[2] / "tests/data/glue")
    config.num_epochs = 1.0
    config.max_seq_length = 64
    config.log_every_steps = 25
    return config
