"""Task heads that sit on an encoder, and the module that joins the two."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmt.models import layers

Dtype = Any


class SequenceClassifier(nn.Module):
    """An encoder and a head: token ids in, float32 logits `[batch, num_labels]` out.

    The encoder returns `(hidden_states, pooled or None)`; the head reads either.
    """
    encoder: nn.Module
    head: nn.Module

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 deterministic: bool = True):
        hidden, pooled = self.encoder(input_ids, attention_mask, token_type_ids, deterministic)
        return self.head(hidden, pooled, deterministic).astype(jnp.float32)


class PooledClassifierHead(nn.Module):
    """BERT's head: dropout and one dense layer over the pooled `[CLS]`."""
    num_labels: int
    dropout_rate: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden, pooled, deterministic: bool):
        x = nn.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
        return layers.dense(self.num_labels, ("embed", None), init_std=self.init_std,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            name="classifier")(x)


class RobertaClassifierHead(nn.Module):
    """RoBERTa's head: dense-tanh-dense on the `<s>` token, dropout before each dense."""
    num_labels: int
    dropout_rate: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden, pooled, deterministic: bool):
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Dropout(self.dropout_rate)(hidden[:, 0], deterministic=deterministic)
        x = jnp.tanh(layers.dense(hidden.shape[-1], ("embed", "embed_out"), name="dense",
                                  **kw)(x))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return layers.dense(self.num_labels, ("embed", None), name="out_proj", **kw)(x)


