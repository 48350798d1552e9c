"""The config of a new model built from scratch (`fmt.from_pretrained(...,
scratch=sizes)`): its sizes, around a tokenizer trained here
(experiments/train_tokenizer.py), with `transformers`' defaults for the rest."""

from fmt.errors import UserError

# Tokenizer classes -> the family a model from scratch gets.
SCRATCH_FAMILIES = {"BertTokenizerFast": "bert", "BertTokenizer": "bert",
                    "RobertaTokenizerFast": "roberta", "RobertaTokenizer": "roberta"}


def scratch_config(tokenizer, sizes: dict, folder) -> dict:
    """The HF config of a new model sized by `sizes` (num_hidden_layers, hidden_size,
    num_attention_heads, intermediate_size, max_position_embeddings, and `family`)
    around a trained tokenizer: BERT for WordPiece, RoBERTa for byte-level BPE, or
    the `family` named (gpt2, llama, bart, t5) with `transformers`' defaults for
    everything else."""
    sizes = dict(sizes)
    family = sizes.pop("family", "")
    if family:
        return _named_scratch_config(family, tokenizer, sizes)
    tokenizer_class = getattr(tokenizer, "hf_tokenizer_class", None) or type(tokenizer).__name__
    model_type = SCRATCH_FAMILIES.get(tokenizer_class)
    if model_type is None:
        raise UserError(f"{folder}: tokenizer class {tokenizer_class!r} names no model family "
                        f"to build from scratch; train one with experiments/train_tokenizer.py")
    config = dict(model_type=model_type, vocab_size=len(tokenizer),
                  pad_token_id=tokenizer.pad_token_id, **sizes)
    if model_type == "roberta":  # positions start after the padding index; one segment
        config.update(type_vocab_size=1, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id,
                      max_position_embeddings=sizes["max_position_embeddings"]
                      + tokenizer.pad_token_id + 1)
    return config


SCRATCH_FAMILIES_NAMED = ("gpt2", "llama", "bart", "t5")  # --config.scratch_family


def _named_scratch_config(family: str, tokenizer, sizes: dict) -> dict:
    """A decoder's (gpt2, llama) or encoder-decoder's (bart, t5: as many decoder
    layers as encoder layers) config of `sizes` around the tokenizer's ids."""
    import transformers
    if family not in SCRATCH_FAMILIES_NAMED:
        raise UserError(f"--config.scratch_family={family!r}: choose one of "
                        f"{', '.join(SCRATCH_FAMILIES_NAMED)} (or leave it empty for "
                        "BERT/RoBERTa)")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    ids = dict(vocab_size=len(tokenizer), bos_token_id=bos,
               eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    layers, hidden, heads = (sizes[k] for k in ("num_hidden_layers", "hidden_size",
                                                "num_attention_heads"))
    if family == "gpt2":
        names = dict(n_embd=hidden, n_layer=layers, n_head=heads,
                     n_inner=sizes["intermediate_size"],
                     n_positions=sizes["max_position_embeddings"])
    elif family == "bart":  # BART starts decoding from its end token
        names = dict(d_model=hidden, encoder_layers=layers, decoder_layers=layers,
                     encoder_attention_heads=heads, decoder_attention_heads=heads,
                     encoder_ffn_dim=sizes["intermediate_size"],
                     decoder_ffn_dim=sizes["intermediate_size"],
                     max_position_embeddings=sizes["max_position_embeddings"],
                     decoder_start_token_id=eos, forced_eos_token_id=eos)
    elif family == "t5":  # v1.1 (gated-GELU, untied); T5 starts decoding from its pad token
        names = dict(d_model=hidden, d_kv=hidden // heads, d_ff=sizes["intermediate_size"],
                     num_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                     tie_word_embeddings=False, decoder_start_token_id=ids["pad_token_id"])
    else:
        names = dict(sizes, num_key_value_heads=heads)
    return transformers.AutoConfig.for_model(family, **names, **ids).to_dict()
