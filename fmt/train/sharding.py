"""The device mesh and where the train state and batches live on it.

Today every process's devices form one `data` axis: params and optimizer state
are replicated, batches are split along their first dimension.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmt.errors import UserError


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("data",))


def check_batch_size(mesh: Mesh, batch_size: int, flag: str) -> None:
    devices = mesh.shape["data"]
    if batch_size % devices:
        raise UserError(f"--config.{flag}={batch_size} is not divisible by the {devices} "
                        "data-parallel devices; pick a multiple")


def create_state(mesh: Mesh, params: dict, optimizer, seed: int) -> dict:
    """The train state, created directly on the mesh (never first on one device)."""
    replicated = NamedSharding(mesh, P())

    def init(params):
        return dict(params=params, opt_state=optimizer.init(params),
                    step=jax.numpy.zeros((), jax.numpy.int32),
                    rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1))

    return jax.jit(init, out_shardings=replicated)(params)


def batch_putter(mesh: Mesh):
    """A function placing a host batch on the mesh, split along the batch axis."""
    split = NamedSharding(mesh, P("data"))
    return lambda batch: jax.device_put(batch, split)
