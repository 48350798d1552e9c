r"""The GLUE example of `transformers`' Flax port (examples/flax/text-classification,
run_flax_glue.py, and its README's table): bert-base-cased, learning rate 2e-5,
batch 32, 3 epochs (5 for MRPC and WNLI), max length 128, no warmup, no weight
decay (the script's defaults), 5 seeds; the README gives the dev-set averages
over its 5 runs.

  python experiments/sweep.py --config=experiments/configs/paper/flax_glue.py \
      --workdir=runs/flax_glue
  python experiments/table.py runs/flax_glue --reference=flax_glue
"""

from fmt.train.config import default_config

TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
SWEEP = ""  # one setting
SEEDS = (0, 1, 2, 3, 4)

# The README's dev-set averages over 5 runs, in percent (MNLI: matched).
PUBLISHED = {
    "bert_base_cased": {
        "label": "Flax example (published, dev)",
        "source": "huggingface/transformers examples/flax/text-classification/README.md",
        "scores": {"cola": {"mcc": 59.04}, "sst2": {"accuracy": 92.23},
                   "mrpc": {"f1": 88.97, "accuracy": 84.36},
                   "stsb": {"pearson": 88.94, "spearman": 88.63},
                   "qqp": {"accuracy": 90.76, "f1": 87.51}, "mnli": {"accuracy": 83.80},
                   "qnli": {"accuracy": 90.82}, "rte": {"accuracy": 64.76},
                   "wnli": {"accuracy": 37.01}},
    },
}


def get_config(task: str = "rte"):
    config = default_config()
    config.task = task
    config.model = "bert-base-cased"
    config.learning_rate = 2e-5
    config.batch_size = 32
    config.num_epochs = 5.0 if task in ("mrpc", "wnli") else 3.0
    config.max_seq_length = 128
    config.warmup_ratio = 0.0
    config.weight_decay = 0.0
    config.export_model = False
    return config
