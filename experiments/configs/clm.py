"""Causal-LM fine-tuning of a decoder (GPT-2, Llama, Mistral, Qwen2):
`--config=experiments/configs/clm.py --config.model=FOLDER` trains on text;
`clm.py:pairs` on prompt/response pairs with the loss on the response only.

Text: --config.train_file=.txt (a text per line) or .jsonl (--config.text_field),
or --config.tfds_dataset=NAME, cut into blocks of max_seq_length tokens (or a
line each: --config.text_mode=line). Pairs: a .jsonl file whose rows hold
--config.prompt_field and --config.response_field. Without --config.eval_file a
held-out share (--config.eval_fraction) is evaluated: loss and perplexity.
"""

import pathlib

from fmt.train.config import default_config

TEXT = pathlib.Path(__file__).resolve().parents[2] / "tests/data/text/tinyshakespeare_first3000.txt"


def get_config(preset: str = "text"):
    config = default_config()
    config.task_kind = "causal_lm"
    config.model = ""  # a decoder folder or hub id (gpt2, meta-llama/..., Qwen/...)
    config.train_file = str(TEXT)
    config.text_mode = "block"
    config.max_seq_length = 128
    config.num_epochs = 1.0
    config.learning_rate = 5e-5
    config.weight_decay = 0.0
    if preset == "pairs":
        config.train_file = ""
        config.response_field = "response"
    elif preset != "text":
        raise ValueError(f"clm.py:{preset}: presets are 'text' and 'pairs'")
    return config
