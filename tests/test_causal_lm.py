"""The causal-LM kind on GPT-2 and Llama: its loss against `transformers`' own,
prompt/response pairs, packing, end-to-end runs, resume, and bad input."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from conftest import TEXT, run_finetune, user_error  # noqa: E402
from fmt.data import batching, packing  # noqa: E402
from fmt.data.features import IGNORE  # noqa: E402
from fmt.data.text import read_pairs  # noqa: E402
from fmt.tasks.causal_lm import CausalLM  # noqa: E402
from fmt.train.config import default_config  # noqa: E402
from test_resume import killed_then_resumed  # noqa: E402

PAIRS = [{"prompt": "Q: who speaks first?\nA:", "response": " the first citizen"},
         {"prompt": "Q: what do they resolve?\nA:", "response": " rather to die than to famish"},
         {"prompt": "Say:", "response": " we are accounted poor citizens"}]


def kind(**overrides):
    config = default_config()
    config.task_kind, config.max_seq_length = "causal_lm", 32
    config.update(overrides)
    return CausalLM(config)


def hf_loss(folder, batch) -> float:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    labels = np.where(batch["attention_mask"] > 0, batch["labels"], IGNORE)
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                     attention_mask=torch.from_numpy(batch["attention_mask"].astype(np.int64)),
                     labels=torch.from_numpy(labels.astype(np.int64))).loss.item()


def our_loss(model, task, batch) -> float:
    logits = model(batch["input_ids"], batch["attention_mask"],
                   **{k: batch[k] for k in ("positions", "segment_ids") if k in batch})
    total, weight = task.loss(logits, batch)
    return float(total / weight)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_block_loss_equals_transformers(family, tiny_decoder):
    folder = tiny_decoder(family)
    model = fmt.from_pretrained(str(folder), task="causal_lm")
    task = kind()
    texts = TEXT.read_text().splitlines()[:60]
    features = task.featurize(model, texts, "train", "slice")
    assert all(len(ids) == 32 for ids in features.tokens["input_ids"][:-1])  # full blocks
    # The blocks hold the texts whole, each ending in its line break (run_clm's keep_linebreaks).
    stream = np.concatenate(features.tokens["input_ids"])
    stream = stream[~np.isin(stream, model.tokenizer.all_special_ids)]
    assert model.tokenizer.decode(stream) == "".join(t + "\n" for t in texts)
    # The last block is short: the batch pads it, and padding is never a target.
    batch = batching.make_batch(features, np.arange(len(features) - 3, len(features)), 32, 4)
    assert our_loss(model, task, batch) == pytest.approx(hf_loss(folder, batch), abs=1e-5)


def test_pairs_learn_the_response_only(tiny_decoder, tmp_path):
    folder = tiny_decoder("llama")
    model = fmt.from_pretrained(str(folder), task="causal_lm")
    task = kind()
    features = task.featurize(model, PAIRS, "train", "pairs")
    eos = model.tokenizer.eos_token_id
    for pair, ids, labels in zip(PAIRS, features.tokens["input_ids"], features.tokens["labels"]):
        prompt = model.tokenizer(pair["prompt"])["input_ids"]
        assert ids[-1] == eos and (labels[:len(prompt)] == IGNORE).all()
        assert labels[len(prompt):].tolist() == ids[len(prompt):].tolist()
        assert model.tokenizer.decode(ids[len(prompt):-1]) == pair["response"]
    batch = batching.make_batch(features, np.arange(3), 32, 4)
    assert our_loss(model, task, batch) == pytest.approx(hf_loss(folder, batch), abs=1e-5)
    # Too long: the response's end is cut; a prompt that fills the row is an error.
    prompt = len(model.tokenizer(PAIRS[0]["prompt"])["input_ids"])
    cut = kind(max_seq_length=prompt + 2).featurize(model, PAIRS[:1], "train", "pairs")
    assert len(cut.tokens["input_ids"][0]) == prompt + 2
    user_error(lambda: kind(max_seq_length=prompt).featurize(model, PAIRS[:1], "train",
                                                             "p.jsonl"),
               "p.jsonl", f"--config.max_seq_length={prompt}")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_packed_rows_give_each_example_its_unpacked_loss(family, tiny_decoder):
    """Per example, the summed token loss in a packed row equals the example's
    own loss alone: attention, positions and targets stop at its boundaries."""
    import optax
    model = fmt.from_pretrained(str(tiny_decoder(family)), task="causal_lm")
    task = kind(text_mode="line")
    features = task.featurize(model, TEXT.read_text().splitlines()[:12], "train", "lines")
    rows = packing.pack_rows(features.lengths, 32)
    assert any(len(row) > 2 for row in rows)
    packed = batching.make_batch(
        features, packing.Packed(np.arange(len(features)), tuple(rows), len(rows)), 32,
        len(features))

    def token_losses(batch):
        logits = model(batch["input_ids"], batch["attention_mask"],
                       **{k: batch[k] for k in ("positions", "segment_ids") if k in batch})
        targets = np.asarray(batch["labels"][:, 1:])
        if "segment_ids" in batch:
            same = batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]
            targets = np.where(same, targets, IGNORE)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits[:, :-1], np.where(targets == IGNORE, 0, targets))
        return np.where(targets == IGNORE, 0.0, np.asarray(losses))

    per_token = token_losses(packed)
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            n = int(features.lengths[index])
            alone = token_losses(batching.make_batch(features, np.array([index]), 32, 1))
            assert per_token[r, start:start + n - 1].sum() == pytest.approx(
                alone[0].sum(), rel=1e-5)
            start += n
    # The kind's own loss over the packed batch counts exactly the examples' targets.
    total, weight = task.loss(model(packed["input_ids"], packed["attention_mask"],
                                    positions=packed["positions"],
                                    segment_ids=packed["segment_ids"]), packed)
    assert float(weight) == float(sum(features.lengths[i] - 1 for i in range(len(features))))


def clm_args(folder, workdir, *extra, preset="text"):
    return [f"--config=experiments/configs/clm.py:{preset}", f"--workdir={workdir}",
            f"--config.model={folder}", "--config.max_seq_length=32", "--config.batch_size=8",
            "--config.max_train_examples=400", "--config.learning_rate=2e-3",
            "--config.log_every_steps=5", *extra]


def test_gpt2_text_run_lowers_perplexity_and_exports(tiny_decoder, tmp_path):
    workdir, before = tmp_path / "gpt2", tmp_path / "before"
    run_finetune(*clm_args(tiny_decoder("gpt2"), workdir, "--config.max_steps=40",
                           "--config.eval_every_steps=20"))
    results = json.loads((workdir / "results.json").read_text())
    assert results["main_metric"] == "perplexity"
    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    perplexities = [line["eval_perplexity"] for line in evals if "eval_perplexity" in line]
    assert len(perplexities) == 2 and perplexities[1] < perplexities[0] < 500
    # num_epochs=0 evaluates the model as loaded: the baseline that training lowered.
    run_finetune(*clm_args(tiny_decoder("gpt2"), before, "--config.num_epochs=0",
                           "--config.export_model=false"))
    baseline = json.loads((before / "results.json").read_text())
    assert baseline["step"] == 0 and baseline["perplexity"] > perplexities[0]
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(workdir / "model"))
    assert type(exported).__name__ == "GPT2LMHeadModel"


def test_llama_pairs_packed_run(tiny_decoder, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 20))
    workdir = tmp_path / "llama"
    result = run_finetune(*clm_args(tiny_decoder("llama"), workdir, f"--config.train_file={data}",
                                    "--config.packing=true", "--config.max_steps=6",
                                    "--config.max_seq_length=96", preset="pairs"))
    assert json.loads((workdir / "results.json").read_text())["step"] == 6
    # 57 training pairs, 8 per batch as unpacked; several share each row of <= 96 tokens.
    steps_per_epoch = int(result.stderr.split(" per epoch")[0].rsplit("(", 1)[1])
    assert steps_per_epoch == math.ceil(57 / 8)
    counts = result.stderr.split("tokens, (")[1].split(")")[0]
    assert max(int(c) for c in counts.split(",") if c.strip()) < 8


@pytest.mark.slow
def test_packed_resume_after_sigkill_is_identical(tiny_decoder, tmp_path):
    extra = ["--config.max_steps=30", "--config.checkpoint_every_steps=4",
             "--config.packing=true",
             "--config.text_mode=line", "--config.dropout=0.1", "--config.log_every_steps=1",
             "--config.eval_every_steps=15"]
    folder = tiny_decoder("gpt2")
    clean, resumed = killed_then_resumed(lambda w: clm_args(folder, w, *extra), tmp_path, 11)
    assert resumed == clean


def test_bad_input(tiny_decoder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    user_error(lambda: read_pairs(str(rows), "prompt", "response"), f"{rows}:2", "'response'")
    rows.write_text('{"prompt": "a", "response": "  "}\n')
    user_error(lambda: read_pairs(str(rows), "prompt", "response"), f"{rows}:1", "empty")
    folder = tiny_decoder("gpt2")
    over = run_finetune(*clm_args(folder, tmp_path / "long", "--config.max_seq_length=256"),
                        check=False)
    assert over.returncode == 2 and "--config.max_seq_length=256" in over.stderr
    assert "128 positions" in over.stderr


def test_gpt2_classification_through_finetune(tiny_decoder, tmp_path):
    """A decoder classifier (last real token pooled) on a GLUE slice: same finetune.py."""
    from conftest import GLUE
    workdir = tmp_path / "cls"
    run_finetune("--config=experiments/configs/glue.py:sst2", f"--workdir={workdir}",
                 f"--config.data_dir={GLUE}", f"--config.model={tiny_decoder('gpt2')}",
                 "--config.max_steps=5", "--config.max_eval_examples=64",
                 "--config.batch_size=8")
    assert 0 <= json.loads((workdir / "results.json").read_text())["accuracy"] <= 1
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(workdir / "model"))
    assert type(exported).__name__ == "GPT2ForSequenceClassification"
    assert exported.config.pad_token_id == 0




@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_from_scratch(family, tmp_path):
    """A trained BPE tokenizer and a new decoder around it: held-out perplexity falls,
    and the export is that family's *ForCausalLM in transformers."""
    import subprocess
    import sys
    from conftest import ROOT
    tokenizer = tmp_path / "tokenizer"
    subprocess.run([sys.executable, str(ROOT / "experiments/train_tokenizer.py"),
                    f"--input={TEXT}", "--kind=bpe", "--vocab_size=600",
                    f"--output={tokenizer}"], check=True, cwd=ROOT, capture_output=True)
    workdir = tmp_path / family
    run_finetune(*clm_args(tokenizer, workdir, "--config.from_scratch=true",
                           f"--config.scratch_family={family}", "--config.scratch_layers=2",
                           "--config.scratch_hidden=64", "--config.scratch_heads=4",
                           "--config.scratch_intermediate=128", "--config.scratch_positions=64",
                           "--config.max_steps=30", "--config.eval_every_steps=15"))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    perplexities = [line["eval_perplexity"] for line in lines if "eval_perplexity" in line]
    assert perplexities[-1] < perplexities[0] < 600 * 2
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(workdir / "model"))
    assert exported.config.model_type == family and exported.config.num_hidden_layers == 2


def test_make_pairs_feeds_the_pairs_preset(tmp_path):
    """experiments/make_pairs.py turns aligned files into rows that read_pairs takes."""
    import subprocess
    import sys
    from conftest import ROOT
    (tmp_path / "a.en").write_text("A dog runs.\nTwo cats sleep.\n")
    (tmp_path / "a.de").write_text("Ein Hund rennt.\nZwei Katzen schlafen.\n")
    out = tmp_path / "pairs.jsonl"
    run = lambda *extra: subprocess.run(
        [sys.executable, str(ROOT / "experiments/make_pairs.py"), f"--source={tmp_path}/a.en",
         f"--target={tmp_path}/a.de", f"--output={out}", *extra],
        capture_output=True, text=True, cwd=ROOT)
    assert run(r"--prompt=English: {source}\nGerman:").returncode == 0
    assert read_pairs(str(out), "prompt", "response") == [
        {"prompt": "English: A dog runs.\nGerman:", "response": " Ein Hund rennt."},
        {"prompt": "English: Two cats sleep.\nGerman:", "response": " Zwei Katzen schlafen."}]
    (tmp_path / "a.de").write_text("Ein Hund rennt.\n")
    failed = run()
    assert failed.returncode == 2 and "2 lines and --target 1" in failed.stderr
