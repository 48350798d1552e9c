"""fmt: fine-tune pretrained Transformer language models in JAX/Flax."""

from fmt.errors import UserError

__all__ = ["Model", "UserError", "from_pretrained"]


def __getattr__(name):
    # `Model` and `from_pretrained` load on first use, so that `import fmt.x` of a
    # light module (fmt.huge_pages, before the scripts re-exec) does not import JAX.
    if name in ("Model", "from_pretrained"):
        from fmt import model
        return getattr(model, name)
    raise AttributeError(f"module 'fmt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
