"""Causal-LM: fine-tuning a decoder (GPT-2, Llama-family) on text.

Texts are cut into blocks of `max_seq_length` tokens from their concatenation,
each text ending in a line break (as run_clm's keep_linebreaks), or taken a
line each (`--config.text_mode`); prompt/response pairs (`--config.response_field`)
are learnt on the response only. Every token is its own target for the position
before it: the labels are the input ids, shifted inside the loss
as `transformers` shifts them, and padding carries IGNORE. The loss is the mean
over the global batch's predicted tokens; evaluation reduces each row on
device to its summed loss, token count and correct count.
"""

import logging

import jax.numpy as jnp
import numpy as np

from fmt.data import text
from fmt.data.features import Features
from fmt.data.tokenize import pad_id
from fmt.errors import UserError
from fmt.tasks.base import IGNORE, TokenLM, token_cross_entropy, token_lm_outputs

log = logging.getLogger("fmt")


class CausalLM(TokenLM):
    name = "causal_lm"
    head = "causal_lm"
    architecture_suffix = "ForCausalLM"
    packable = True

    def featurize(self, model, records, split, source) -> Features:
        if records and isinstance(records[0], dict):
            return pair_features(model.tokenizer, [r["prompt"] for r in records],
                                 [r["response"] for r in records], self.config.max_seq_length,
                                 split, source)
        c = self.config
        if c.text_mode == "block":  # a generated text breaks its lines where the data did
            records = [t + "\n" for t in records]
        encoded = text.encode_texts(model.tokenizer, records, c.max_seq_length, c.text_mode,
                                    source)
        ids = encoded.tokens["input_ids"]
        if not any(len(i) > 1 for i in ids):
            raise UserError(f"{source}: every {split} example is a single token, which leaves "
                            "nothing to predict; give longer texts or raise "
                            "--config.max_seq_length")
        return Features(tokens={"input_ids": ids, "labels": [i.copy() for i in ids]},
                        pad_values={"input_ids": encoded.pad_id, "labels": IGNORE},
                        info=encoded.info)

    def loss(self, logits, batch):
        targets = batch["labels"][:, 1:]
        if "segment_ids" in batch:  # packed: the next example's first token is no target
            segments = batch["segment_ids"]
            targets = jnp.where(segments[:, 1:] == segments[:, :-1], targets, IGNORE)
        return token_cross_entropy(logits[:, :-1], targets)

    def eval_outputs(self, logits, batch):
        return token_lm_outputs(logits[:, :-1], batch["labels"][:, 1:])


def pair_features(tokenizer, prompts: list[str], responses: list[str], limit: int, split: str,
                  source: str) -> Features:
    """Prompt then response then end-of-sequence, labelled on the response and
    the end only; pairs longer than `limit` tokens lose the response's end."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError(f"{tokenizer.name_or_path}: the tokenizer has no end-of-sequence "
                        "token, which prompt/response training appends to each response")
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    ids, labels, cut = [], [], 0
    for prompt, response in zip(prompt_ids, response_ids):
        if len(prompt) >= limit:
            raise UserError(f"{source}: a prompt of {len(prompt)} tokens leaves no room for its "
                            f"response in --config.max_seq_length={limit}; raise it or shorten "
                            "the prompts")
        row = np.asarray([*prompt, *response, eos], np.int32)
        label = np.concatenate([np.full(len(prompt), IGNORE, np.int32), row[len(prompt):]])
        if len(row) > limit:
            cut += 1
            row, label = row[:limit], label[:limit]
        ids.append(row)
        labels.append(label)
    if cut:
        log.warning("%s: %d of %d %s pairs are longer than --config.max_seq_length=%d; their "
                    "responses are cut", source, cut, len(prompts), split, limit)
    return Features(tokens={"input_ids": ids, "labels": labels},
                    pad_values={"input_ids": pad_id(tokenizer), "labels": IGNORE},
                    info={"source": source, "mode": "pairs"})
