r"""The compact BERTs of Turc et al. 2019 ("Well-Read Students Learn Better: On the
Importance of Pre-training Compact Models", arXiv:1908.08962; the
google-research/bert README): 4 epochs, batch in {8, 16, 32, 64, 128} and
learning rate in {3e-4, 1e-4, 5e-5, 3e-5}, the best on dev. BERT-Mini by
default (`--config.model=google/bert_uncased_L-2_H-128_A-2` for BERT-Tiny,
L-4_H-512_A-8 Small, L-8_H-512_A-8 Medium). The README reports GLUE test scores.

  python experiments/sweep.py --config=experiments/configs/paper/turc_compact.py \
      --workdir=runs/bert_mini
  python experiments/table.py runs/bert_mini --reference=turc_compact:bert_mini
"""

from fmt.train.config import default_config

TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
SWEEP = "batch_size=8,16,32,64,128;learning_rate=3e-4,1e-4,5e-5,3e-5"
SEEDS = (0,)


def _scores(cola, sst2, mrpc, stsb, qqp, mnli_m, mnli_mm, qnli, rte, wnli):
    """The README's row: MRPC and QQP as F1/accuracy, STS-B as Pearson/Spearman."""
    return {"cola": {"mcc": cola}, "sst2": {"accuracy": sst2},
            "mrpc": {"f1": mrpc[0], "accuracy": mrpc[1]},
            "stsb": {"pearson": stsb[0], "spearman": stsb[1]},
            "qqp": {"f1": qqp[0], "accuracy": qqp[1]},
            "mnli": {"accuracy": mnli_m, "validation_mismatched/accuracy": mnli_mm},
            "qnli": {"accuracy": qnli}, "rte": {"accuracy": rte}, "wnli": {"accuracy": wnli}}


_SOURCE = "google-research/bert README, compact models table (GLUE test set)"
PUBLISHED = {
    "bert_tiny": {"label": "BERT-Tiny (published, test)", "source": _SOURCE,
                  "scores": _scores(0.0, 83.2, (81.1, 71.1), (74.3, 73.6), (62.2, 83.4),
                                    70.2, 70.3, 81.5, 57.2, 62.3)},
    "bert_mini": {"label": "BERT-Mini (published, test)", "source": _SOURCE,
                  "scores": _scores(0.0, 85.9, (81.1, 71.8), (75.4, 73.3), (66.4, 86.2),
                                    74.8, 74.3, 84.1, 57.9, 62.3)},
    "bert_small": {"label": "BERT-Small (published, test)", "source": _SOURCE,
                   "scores": _scores(27.8, 89.7, (83.4, 76.2), (78.8, 77.0), (68.1, 87.0),
                                     77.6, 77.0, 86.4, 61.8, 62.3)},
    "bert_medium": {"label": "BERT-Medium (published, test)", "source": _SOURCE,
                    "scores": _scores(38.0, 89.6, (86.6, 81.6), (80.4, 78.4), (69.6, 87.9),
                                      80.0, 79.1, 87.7, 62.2, 62.3)},
}


def get_config(task: str = "rte"):
    config = default_config()
    config.task = task
    config.model = "google/bert_uncased_L-4_H-256_A-4"
    config.num_epochs = 4.0
    config.max_seq_length = 128
    config.export_model = False
    return config
