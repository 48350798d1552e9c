"""fmt: fine-tune pretrained Transformer language models in JAX/Flax."""

from fmt.errors import UserError
from fmt.model import Model, from_pretrained

__all__ = ["Model", "UserError", "from_pretrained"]
