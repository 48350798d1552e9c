"""Extractive QA through experiments/finetune.py: SQuAD v1.1 slices end to end
(official-format predictions for every dev question, the export a
BertForQuestionAnswering), and v2 no-answer questions (HasAns/NoAns, null odds)."""

import json
import subprocess
import sys

from conftest import ROOT, run_finetune
from fmt.data.squad import read_squad

SQUAD = ROOT / "tests/data/squad"


def qa_args(model, workdir, *extra):
    return ["--config=experiments/configs/squad.py", f"--workdir={workdir}",
            f"--config.model={model}", "--config.max_seq_length=128", "--config.doc_stride=32",
            "--config.batch_size=8", "--config.eval_batch_size=16",
            "--config.max_train_examples=48", "--config.max_eval_examples=40",
            "--config.max_steps=8", "--config.log_every_steps=2", *extra]


def test_squad_v1_run_writes_official_predictions(tiny_model, tmp_path):
    run_finetune(*qa_args(tiny_model, tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["main_metric"] == "f1"
    assert 0 <= results["exact_match"] <= results["f1"] <= 1
    predictions = json.loads((tmp_path / "predictions_validation.json").read_text())
    dev = read_squad(str(SQUAD / "dev.json"))[:40]
    assert list(predictions) == [r["id"] for r in dev]
    # Every answer is a piece of its own context (a span, never padding or the question).
    assert all(p and p in r["context"] for p, r in zip(predictions.values(), dev))
    exported = json.loads((tmp_path / "model" / "config.json").read_text())
    assert exported["architectures"] == ["BertForQuestionAnswering"]
    # experiments/predict.py answers the same questions, without their answers, as the
    # run's own evaluation did.
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "context")})
                                 + "\n" for r in dev))
    answered = subprocess.run(
        [sys.executable, str(ROOT / "experiments/predict.py"), f"--model={tmp_path}/model",
         f"--input={questions}", f"--output={tmp_path}/answers.json", "--max_seq_length=128",
         "--doc_stride=32", "--batch_size=16", "--progress_bar=false"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert answered.returncode == 0, answered.stderr[-2000:]
    assert json.loads((tmp_path / "answers.json").read_text()) == predictions


def test_squad_v2_no_answer_questions(tiny_model, tmp_path):
    dev = read_squad(str(SQUAD / "dev.json"))[:30]
    rows = [dict(r, answers=[] if i % 3 == 0 else r["answers"]) for i, r in enumerate(dev)]
    data = tmp_path / "v2.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = qa_args(tiny_model, tmp_path / "run", f"--config.train_file={data}",
                   f"--config.eval_file={data}")
    refused = run_finetune(*args, check=False)
    assert refused.returncode != 0 and "--config.version_2_with_negative=true" in refused.stderr
    run_finetune(*args, "--config.version_2_with_negative=true",
                 "--config.null_score_diff_threshold=-1e9")  # every question unanswered
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["NoAns_total"] == 10 and results["HasAns_total"] == 20
    # Abstaining everywhere: right on the 10 unanswerable questions only.
    assert abs(results["exact_match"] - results["NoAns_exact"] * 10 / 30) < 1e-9
    assert results["NoAns_exact"] == 1 and results["HasAns_exact"] == 0
    odds = json.loads((tmp_path / "run" / "null_odds_validation.json").read_text())
    predictions = json.loads((tmp_path / "run" / "predictions_validation.json").read_text())
    assert set(odds) == set(predictions) == {r["id"] for r in rows}
    assert set(predictions.values()) == {""}
