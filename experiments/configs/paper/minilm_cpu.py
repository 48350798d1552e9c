r"""A GLUE protocol sized for one CPU machine: all-MiniLM-L6-v2 (6 layers, hidden
384, 22.7M parameters; sentence-transformers/all-MiniLM-L6-v2, Apache-2.0) on
RTE, MRPC, STS-B and CoLA for 3 epochs and SST-2 for 1, AdamW at 5e-5, batch 32,
linear warmup over 10% of the steps then linear decay, seeds 0, 1 and 2.

Not a published protocol: fmt's own, run on this repository's 2-core machine
(experiments/results/glue_minilm_protocol.md); its reference is the same grid
run with PyTorch `transformers` on the same checkpoint:

  python experiments/sweep.py --config=experiments/configs/paper/minilm_cpu.py \
      --config.data_dir=../shared/data/glue --workdir=runs/protocol/fmt
  python experiments/sweep.py --config=experiments/configs/paper/minilm_cpu.py \
      --config.data_dir=../shared/data/glue --workdir=runs/protocol/torch \
      --script=experiments/torch_peer.py
  python experiments/table.py runs/protocol/fmt --reference=runs/protocol/torch \
      --labels=fmt,PyTorch --plots
"""

from fmt.train.config import default_config

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
SEEDS = (0, 1, 2)
SWEEP = ""  # one setting: the grid is the seeds


def get_config(task: str = "rte"):
    config = default_config()
    config.task = task
    config.learning_rate = 5e-5
    config.batch_size = 32
    config.num_epochs = 1.0 if task == "sst2" else 3.0
    config.export_model = False  # 15 runs per side: keep the records, not 15 model copies
    return config
