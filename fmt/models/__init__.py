"""Model families. A family module provides:

- a config dataclass with `from_hf(dict)` and `to_hf() -> dict`;
- `backbone(config, *, pooler, dtype, param_dtype, remat)`: a module taking
  `(input_ids, attention_mask, token_type_ids, deterministic)` and returning a
  `heads.BackboneOutput`; encoders and decoders that can be packed
  (fmt.data.packing) also take `positions=None` (a decoder's default: counted
  over real tokens, so left-padded rows start at 0), `segment_ids=None`
  (tokens attend within their segment only) and `example_spans=None` (where
  each example's pooled token sits); decoders ignore `token_type_ids`;
- `backbone_name_map(config, pooler)` and `weight_prefix(config)`: the HF names
  of the backbone's weights;
- `with_dropout(config, rate)` and `max_positions(config)`;
- `head(kind, config, num_outputs, dtype, param_dtype) -> heads.HeadSpec` for
  each head kind it has, listed in `HEAD_KINDS` (task kinds name the head
  they need);
- optionally `TASK_PREFIXES = True`: its checkpoints expect a task prefix on
  their sources (T5), so seq2seq does not warn about `--config.source_prefix`.

Encoder-decoders (T5, BART) follow fmt/models/encdec.py besides.

A new family is a new file plus one line here.
"""

from fmt.models import bart, bert, gpt2, llama, t5

# Hugging Face `model_type` -> (family module, config class).
FAMILIES = {
    "bart": (bart, bart.BartConfig),
    "bert": (bert, bert.BertConfig),
    "roberta": (bert, bert.BertConfig),
    "gpt2": (gpt2, gpt2.GPT2Config),
    "llama": (llama, llama.LlamaConfig),
    "mistral": (llama, llama.LlamaConfig),
    "qwen2": (llama, llama.LlamaConfig),
    "t5": (t5, t5.T5Config),
}
