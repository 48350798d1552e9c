"""Train a BERT (WordPiece) or RoBERTa (byte-level BPE) tokenizer on texts.

The folder it writes is a Hugging Face tokenizer folder: tokenizer.json with
the family's normalizer, pre-tokenizer and [CLS]/[SEP] (or <s>/</s>) post
processor, and a tokenizer_config.json naming BertTokenizerFast or
RobertaTokenizerFast, so that `fmt.hf.load_tokenizer`, AutoTokenizer and
PreTrainedTokenizerFast all load it with its special tokens.
"""

import json
import os
import pathlib
from collections.abc import Iterable

from fmt.errors import UserError

KINDS = ("wordpiece", "bpe")
# Special tokens in the order that fixes their ids: BERT's [PAD] is 0, RoBERTa's <s> 0, <pad> 1.
_SPECIAL = {
    "wordpiece": dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]"),
    "bpe": dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                mask_token="<mask>"),
}
_CLASS = {"wordpiece": "BertTokenizerFast", "bpe": "RobertaTokenizerFast"}


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int,
                    folder: str | os.PathLike) -> pathlib.Path:
    """Train a `kind` tokenizer of `vocab_size` entries on `texts`; save it to `folder`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, \
        processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in KINDS:
        raise UserError(f"--kind={kind}: use one of {', '.join(KINDS)}")
    special = _SPECIAL[kind]
    tokens = list(special.values())
    if vocab_size <= len(tokens):
        raise UserError(f"--vocab_size={vocab_size}: must exceed the {len(tokens)} special "
                        f"tokens; BERT uses 30522, RoBERTa 50265")
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=tokens)
        first, last = "[CLS]", "[SEP]"
    else:
        # No unk_token: byte-level BPE covers every byte, as RoBERTa's does.
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=tokens,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        first, last = "<s>", "</s>"
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.get_vocab_size() <= len(tokens):
        raise UserError("the texts gave no vocabulary; train on a file with text in it")
    ids = {token: tokenizer.token_to_id(token) for token in (first, last)}
    if kind == "wordpiece":
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", pair=f"{first} $A {last} $B:1 {last}:1",
            special_tokens=list(ids.items()))
    else:
        tokenizer.post_processor = processors.RobertaProcessing(
            (last, ids[last]), (first, ids[first]), trim_offsets=True, add_prefix_space=False)
    if kind == "bpe":
        special = {**special, "cls_token": first, "sep_token": last}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    folder = pathlib.Path(folder)
    wrapped.save_pretrained(str(folder))
    _name_class(folder / "tokenizer_config.json", _CLASS[kind], kind)
    # transformers 5 no longer writes it; older readers and other tools look for it.
    (folder / "special_tokens_map.json").write_text(
        json.dumps(special, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def _name_class(config_path: pathlib.Path, name: str, kind: str) -> None:
    """Name the class AutoTokenizer should build, with the family's own options."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = name
    if kind == "wordpiece":
        config["do_lower_case"] = True
    else:
        config["add_prefix_space"] = False
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                           encoding="utf-8")
