"""LoRA adapters against PyTorch `peft`: both ways, merged and unmerged, per family."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import fmt  # noqa: E402
from conftest import user_error  # noqa: E402
from fmt.models import lora  # noqa: E402

IDS = np.array([[5, 17, 42, 99, 7, 3, 250, 11], [8, 9, 10, 11, 12, 13, 14, 15]])
TASKS = {"gpt2": "causal_lm", "llama": "causal_lm", "bert": "masked_lm"}


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tiny_decoder, tiny_model):
    """family -> a folder with a random model of the class its task kind exports."""
    folders = {"gpt2": tiny_decoder("gpt2"), "llama": tiny_decoder("llama")}
    torch.manual_seed(0)
    bert = tmp_path_factory.mktemp("bert-mlm")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64)
    transformers.BertForMaskedLM(config).save_pretrained(bert)
    transformers.AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(bert)
    folders["bert"] = bert
    return folders


def torch_base(folder, family):
    cls = transformers.AutoModelForMaskedLM if family == "bert" else \
        transformers.AutoModelForCausalLM
    return cls.from_pretrained(str(folder)).eval()


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(IDS)).logits.numpy()


def fmt_logits(model, params=None) -> np.ndarray:
    if params is not None:
        model.params = params
    return np.asarray(model(IDS))


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_peft_adapter_loads_into_fmt(family, bases, tmp_path):
    """peft -> fmt: an adapter trained (here: random, B nonzero) in peft, loaded with
    `fmt.from_pretrained(base, adapter=...)`, gives peft's logits; the merged
    model exported by fmt gives them in plain transformers."""
    torch.manual_seed(1)
    tuned = peft.get_peft_model(torch_base(bases[family], family), peft.LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False))  # peft's default targets
    tuned.save_pretrained(str(tmp_path / "adapter"))
    want = torch_logits(tuned.eval())
    model = fmt.from_pretrained(str(bases[family]), task=TASKS[family],
                                adapter=str(tmp_path / "adapter"))
    got = fmt_logits(model)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(want - torch_logits(torch_base(bases[family], family))).max() > 1e-3
    model.save_pretrained(tmp_path / "merged")
    merged = torch_base(tmp_path / "merged", family)
    assert np.abs(torch_logits(merged) - want).max() < 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_fmt_adapter_loads_into_peft(family, bases, tmp_path):
    """fmt -> peft: fmt's adapters, saved as a PEFT folder, load onto the torch base
    with fmt's merged logits; fmt's default targets are peft's."""
    model = fmt.from_pretrained(str(bases[family]), task=TASKS[family])
    spec = lora.plan(model.name_map(), model.params, 4, 8.0, (), model.config.model_type)
    adapters = lora.init(spec, seed=0)
    rng = np.random.default_rng(0)
    for adapter in adapters.values():  # a trained adapter: B no longer zero
        adapter["lora_B"] = rng.normal(0, 0.2, adapter["lora_B"].shape).astype(np.float32)
    base_logits = fmt_logits(model)
    assert np.array_equal(fmt_logits(model, lora.merge(model.params, lora.init(spec, 0), spec)),
                          base_logits)  # fresh adapters change nothing
    got = fmt_logits(model, lora.merge(model.params, adapters, spec))
    lora.save_peft(tmp_path / "adapter", adapters, spec, str(bases[family]), TASKS[family])
    tuned = peft.PeftModel.from_pretrained(torch_base(bases[family], family),
                                           str(tmp_path / "adapter")).eval()
    assert np.abs(torch_logits(tuned) - got).max() < 1e-4
    inferred = peft.get_peft_model(torch_base(bases[family], family), peft.LoraConfig(r=4))
    theirs = {name.removeprefix("base_model.model.") for name, module in
              inferred.named_modules() if hasattr(module, "lora_A") and name}
    assert theirs == {t.module for t in spec.targets}


def test_targets_that_match_nothing_name_what_exists(bases):
    model = fmt.from_pretrained(str(bases["llama"]), task="causal_lm")
    user_error(lambda: lora.plan(model.name_map(), model.params, 4, 8, ("qkv",), "llama"),
               "--config.lora_targets=qkv", "q_proj", "o_proj")
    user_error(lambda: lora.plan(model.name_map(), model.params, 0, 8, (), "llama"),
               "--config.lora_rank=0")


def lora_run(folder, workdir, *extra, config="experiments/configs/clm.py"):
    from conftest import run_finetune
    return run_finetune(f"--config={config}", f"--workdir={workdir}", f"--config.model={folder}",
                        "--config.max_seq_length=32", "--config.batch_size=8",
                        "--config.max_train_examples=200", "--config.learning_rate=5e-3",
                        "--config.lora_rank=4", "--config.log_every_steps=2", *extra)


def test_lora_run_trains_adapters_only_and_exports_both(tiny_decoder, tmp_path):
    """A LoRA fine-tune: only the adapters change; the merged export and the PEFT
    adapter on the base give the same logits; the log names the trainable share."""
    import json
    folder = tiny_decoder("llama")
    workdir = tmp_path / "run"
    result = lora_run(folder, workdir, "--config.max_steps=12", "--config.eval_every_steps=6")
    assert "training LoRA rank 4 on 4 modules" in result.stderr and "optimizer state" in \
        result.stderr
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    ppl = [line["eval_perplexity"] for line in lines if "eval_perplexity" in line]
    assert ppl[-1] < ppl[0]
    base = fmt.from_pretrained(str(folder), task="causal_lm")
    merged = fmt.from_pretrained(str(workdir / "model"), task="causal_lm")
    flat = lambda params: {"/".join(k.key for k in path): value for path, value
                           in jax.tree_util.tree_flatten_with_path(params)[0]}
    before, after = flat(base.params), flat(merged.params)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    # q_proj and v_proj, PEFT's default targets for Llama: nothing else moved.
    assert changed == {f"encoder/layer_{i}/attention/{w}/kernel" for i in range(2)
                       for w in ("query", "value")}, changed
    tuned = peft.PeftModel.from_pretrained(torch_base(folder, "llama"),
                                           str(workdir / "adapter")).eval()
    assert np.abs(torch_logits(tuned) - fmt_logits(merged)).max() < 1e-4


def test_lora_classifier_trains_its_head(tiny_model, tmp_path):
    """Classification with LoRA: the new head is trained too and travels in the
    adapter folder as PEFT's modules_to_save."""
    from conftest import GLUE
    workdir = tmp_path / "cls"
    lora_run(tiny_model, workdir, "--config.max_steps=6", f"--config.data_dir={GLUE}",
             "--config.max_eval_examples=32", config="experiments/configs/glue.py:sst2")
    merged = fmt.from_pretrained(str(workdir / "model"))
    via_adapter = fmt.from_pretrained(str(tiny_model), num_labels=2,
                                      adapter=str(workdir / "adapter"))
    ids = np.array([[101, 2023, 2143, 2003, 2307, 102]])
    assert np.abs(np.asarray(merged(ids)) - np.asarray(via_adapter(ids))).max() < 1e-5
    import json
    config = json.loads((workdir / "adapter/adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"] and config["task_type"] == "SEQ_CLS"


@pytest.mark.slow
def test_lora_resume_after_sigkill_is_identical(tiny_decoder, tmp_path):
    from test_resume import killed_then_resumed
    folder = tiny_decoder("gpt2")
    args = lambda workdir: [
        "--config=experiments/configs/clm.py", f"--workdir={workdir}", f"--config.model={folder}",
        "--config.max_seq_length=32", "--config.batch_size=8", "--config.max_train_examples=200",
        "--config.learning_rate=5e-3", "--config.lora_rank=4", "--config.log_every_steps=1",
        "--config.max_steps=24", "--config.checkpoint_every_steps=4", "--config.dropout=0.1",
        "--config.eval_every_steps=12"]
    clean, resumed = killed_then_resumed(args, tmp_path, 9)
    assert resumed == clean
    adapter = lambda w: (w / "adapter/adapter_model.safetensors").read_bytes()
    assert adapter(tmp_path / "broken") == adapter(tmp_path / "clean")


def test_lora_bad_flags(tiny_decoder, tmp_path):
    from conftest import run_finetune
    folder = tiny_decoder("gpt2")
    result = run_finetune("--config=experiments/configs/clm.py", f"--workdir={tmp_path}/a",
                          f"--config.model={folder}", "--config.lora_rank=4",
                          "--config.lora_targets=qkv", check=False)
    assert result.returncode == 2 and "c_attn" in result.stderr.splitlines()[-1]
    result = run_finetune("--config=experiments/configs/clm.py", f"--workdir={tmp_path}/b",
                          f"--config.model={folder}", "--config.lora_rank=4",
                          "--config.lora_dropout=0.1", check=False)
    assert result.returncode == 2 and "--config.lora_dropout" in result.stderr.splitlines()[-1]


def test_lora_on_an_fsdp_mesh_matches_one_device(tiny_model, tmp_path):
    """The frozen params sharded over fsdp (the adapters replicated): the same
    losses as on one device."""
    from conftest import run_finetune
    from test_scale import args_for, losses
    lora_args = ("--config.lora_rank=4", "--config.lora_alpha=32")
    run_finetune(*args_for(tiny_model, tmp_path / "one", *lora_args))
    run_finetune(*args_for(tiny_model, tmp_path / "mesh", *lora_args,
                           "--config.mesh=data=2,fsdp=2"), devices=4)
    one, mesh = losses(tmp_path / "one"), losses(tmp_path / "mesh")
    assert max(one) - min(one) > 1e-3  # the adapters (and head) do learn
    assert max(abs(a - b) for a, b in zip(one, mesh)) < 1e-5, (one, mesh)
