"""GLUE tasks: `--config=experiments/configs/glue.py:<task>` (cola, sst2, mrpc, qqp,
stsb, mnli, qnli, rte, wnli). Data comes from TFDS unless `--config.data_dir`
points at a glue_data folder."""

from fmt.train.config import default_config


def get_config(task: str = "sst2"):
    config = default_config()
    config.task = task
    return config
