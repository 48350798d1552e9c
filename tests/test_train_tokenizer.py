"""Tokenizers trained from scratch load as BERT / RoBERTa tokenizers with their specials."""

import json
import pathlib
import subprocess
import sys

import pytest

from fmt.data.tokenizer_training import train_tokenizer
from fmt.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SST2 = ROOT / "tests" / "data" / "glue" / "SST-2" / "train.tsv"
TEXT = "Hello, the film is a wonderful mess !"


@pytest.fixture(scope="module")
def sentences():
    return [line.split("\t")[0] for line in SST2.read_text().splitlines()[1:401]]


@pytest.fixture(scope="module")
def folders(sentences, tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {kind: train_tokenizer(iter(sentences), kind, 1000, root / kind)
            for kind in ("wordpiece", "bpe")}


EXPECTED = {
    "wordpiece": dict(cls="BertTokenizer", mask="[MASK]", pad="[PAD]", pad_id=0,
                      first="[CLS]", last="[SEP]", unk="[UNK]"),
    "bpe": dict(cls="RobertaTokenizer", mask="<mask>", pad="<pad>", pad_id=1,
                first="<s>", last="</s>", unk="<unk>"),
}


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
@pytest.mark.parametrize("loader", ["PreTrainedTokenizerFast", "AutoTokenizer", "fmt"])
def test_loads_with_special_tokens(folders, kind, loader):
    import transformers

    from fmt.hf import load_tokenizer
    folder = folders[kind]
    expected = EXPECTED[kind]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == {"wordpiece": "BertTokenizerFast",
                                         "bpe": "RobertaTokenizerFast"}[kind]
    assert (folder / "tokenizer.json").is_file()
    assert (folder / "special_tokens_map.json").is_file()
    if loader == "fmt":
        tokenizer = load_tokenizer(folder)
    else:
        tokenizer = getattr(transformers, loader).from_pretrained(str(folder))
    if loader == "AutoTokenizer":
        assert type(tokenizer).__name__ == expected["cls"]
    assert len(tokenizer) == 1000
    assert tokenizer.mask_token == expected["mask"] and tokenizer.pad_token == expected["pad"]
    assert tokenizer.pad_token_id == expected["pad_id"]
    assert tokenizer.unk_token == expected["unk"]
    assert tokenizer.convert_tokens_to_ids(expected["mask"]) == tokenizer.mask_token_id
    ids = tokenizer(TEXT)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == expected["first"] == tokenizer.cls_token
    assert tokens[-1] == expected["last"] == tokenizer.sep_token
    assert expected["first"] not in tokens[1:-1] and expected["unk"] not in tokens
    assert len(tokens) > 4  # sub-words, not one token per character or per text
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    if kind == "bpe":  # byte-level: the text comes back exactly
        assert decoded == TEXT
    else:  # lowercased, and BERT's decoder joins punctuation; the ids come back exactly
        assert decoded.startswith("hello, the film is a")
        assert tokenizer(decoded)["input_ids"] == ids
    pair = tokenizer("a", "b")["input_ids"]
    assert tokenizer.convert_ids_to_tokens([pair[0], pair[-1]]) == [expected["first"],
                                                                   expected["last"]]


def test_bad_arguments(sentences, tmp_path):
    with pytest.raises(UserError, match="--kind=sentencepiece"):
        train_tokenizer(sentences, "sentencepiece", 1000, tmp_path / "x")
    with pytest.raises(UserError, match="--vocab_size=5"):
        train_tokenizer(sentences, "wordpiece", 5, tmp_path / "x")


def test_script(tmp_path, sentences):
    """The flags, on a .jsonl file with a named text field."""
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"body": s}) + "\n" for s in sentences[:200]))
    script = [sys.executable, str(ROOT / "experiments" / "train_tokenizer.py")]
    result = subprocess.run([*script, f"--input={data}", "--text_field=body", "--kind=bpe",
                             "--vocab_size=400", f"--output={tmp_path / 'out'}"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert saved["model"]["type"] == "BPE"
    result = subprocess.run([*script, f"--input={data}", f"--output={tmp_path / 'bad'}"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {data}:1: no field 'text'")
