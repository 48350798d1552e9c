"""The device mesh, and where the train state and batches live on it.

Three mesh axes: `data` (batch split, params replicated), `fsdp` (batch split,
params and optimizer state split by their `embed` dimension) and `tensor`
(heads, MLP and vocabulary dimensions split). Params carry logical axis names
(fmt.models.layers); `LOGICAL_RULES` maps those names to mesh axes, and a
dimension that a mesh axis does not divide stays whole.
"""

import jax
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmt.data import batching, packing
from fmt.errors import UserError
from fmt.train import step as step_lib

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both
LOGICAL_RULES = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed_out", None),
)


def parse_mesh(spec: str, num_devices: int) -> dict[str, int]:
    """`data=-1,fsdp=2,tensor=1` -> axis sizes; -1 takes the devices left over."""
    sizes = {axis: 1 for axis in MESH_AXES}
    flag = f"--config.mesh={spec}"
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name not in MESH_AXES or not value.lstrip("-").isdigit():
            raise UserError(f"{flag}: expected axis=size with axes {MESH_AXES}, got {part!r}")
        sizes[name] = int(value)
    rest = [axis for axis, size in sizes.items() if size == -1]
    fixed = int(np.prod([size for size in sizes.values() if size != -1]))
    if len(rest) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
        raise UserError(f"{flag}: sizes must be positive, with at most one -1")
    if rest:
        if num_devices % fixed:
            raise UserError(f"{flag}: {num_devices} devices cannot be split by {fixed}")
        sizes[rest[0]] = num_devices // fixed
    if int(np.prod(list(sizes.values()))) != num_devices:
        raise UserError(f"{flag}: the axes multiply to {int(np.prod(list(sizes.values())))} "
                        f"but there are {num_devices} devices")
    return sizes


def make_mesh(spec: str = "data=-1") -> Mesh:
    sizes = parse_mesh(spec, jax.device_count())
    # Auto axes: XLA's partitioner places activations; only params and batches
    # are pinned.
    return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def batch_devices(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(mesh: Mesh, batch_size: int, flag: str, accum_steps: int = 1) -> None:
    """Every microbatch must split evenly over the data-parallel devices."""
    devices = batch_devices(mesh)
    if batch_size % devices:
        raise UserError(f"--config.{flag}={batch_size} is not divisible by the {devices} "
                        "data-parallel devices; pick a multiple")
    if accum_steps < 1 or batch_size % (devices * accum_steps):
        raise UserError(f"--config.grad_accum_steps={accum_steps}: --config.{flag}="
                        f"{batch_size} must split into that many microbatches of a multiple "
                        f"of the {devices} data-parallel devices")


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide (and from missing dims)."""
    fitted = []
    for dim, axes in enumerate(tuple(spec)[:len(shape)]):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        fitted.append(axes if names and shape[dim] % size == 0 else None)
    return P(*fitted)


def param_shardings(mesh: Mesh, logical_specs, shapes):
    """NamedShardings for params from their logical axis names."""
    mesh_specs = jax.tree.map(lambda s: nn.logical_to_mesh_axes(s, LOGICAL_RULES),
                              logical_specs, is_leaf=lambda x: isinstance(x, P))
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, _fit(spec, x.shape, mesh)),
                        mesh_specs, shapes, is_leaf=lambda x: isinstance(x, P))


def state_shardings(mesh: Mesh, params, logical_specs, optimizer) -> dict:
    """Shardings of the whole train state: the optimizer's per-param leaves follow
    their param; everything else (step counts, rng, factored moments) is replicated."""
    replicated = NamedSharding(mesh, P())
    params_sh = param_shardings(mesh, logical_specs, params)
    opt_shapes = jax.eval_shape(optimizer.init, params)
    opt_sh = optax.tree_map_params(optimizer, lambda _, sharding: sharding, opt_shapes,
                                   params_sh, transform_non_params=lambda _: replicated)
    opt_sh = jax.tree.map(
        lambda sh, x: replicated if len(sh.spec) > len(x.shape)
        else NamedSharding(mesh, _fit(sh.spec, x.shape, mesh)), opt_sh, opt_shapes)
    return dict(params=params_sh, opt_state=opt_sh, step=replicated, rng=replicated)


def create_state(shardings: dict, params: dict, optimizer, seed: int,
                 frozen: dict | None = None, rng_impl: str = "threefry2x32") -> dict:
    """The train state, created directly sharded (never whole on one device);
    `frozen` params (LoRA's base, sharded by `shardings["frozen"]`) join it as they are.
    Its `rng` is key data of `rng_impl` (fmt.train.step.initial_rng), for a
    train step made with the same implementation."""
    # The key is made outside the sharded init: XLA:CPU cannot partition Philox's
    # key derivation over a mesh ("Unable to convert MHLO to StableHLO").
    rng = np.asarray(step_lib.initial_rng(seed, rng_impl))

    def init(params, rng):
        return dict(params=params, opt_state=optimizer.init(params),
                    step=jax.numpy.zeros((), jax.numpy.int32), rng=rng)

    state = jax.jit(init, out_shardings={k: v for k, v in shardings.items() if k != "frozen"})(
        place(params, shardings["params"]), rng)
    if frozen is not None:
        state["frozen"] = place(frozen, shardings["frozen"])
    return state


def place(params: dict, shardings) -> dict:
    """Params onto the mesh, each device given its slice of each leaf. A leaf is
    a host array or a lazy param (`hf.LazyParam`), which reads from the
    checkpoint only the slices asked of it: those that this process's devices
    hold, each once however many of them share it."""
    return jax.tree.map(_place, params, shardings)


def _place(value, sharding):
    slices = {}

    def read(index):
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in slices:
            slices[key] = value[index]
        return slices[key]

    return jax.make_array_from_callback(tuple(value.shape), sharding, read)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def local_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
    """The rows of a global batch that this process's devices hold."""
    indices = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    return np.unique(np.concatenate([np.arange(batch_size)[i[0]] for i in indices.values()]))


class BatchFeeder:
    """Builds this process's rows of each global batch, and only those, and
    places them on the mesh as one global array split over `data` x `fsdp`."""

    def __init__(self, mesh: Mesh, batch_size: int):
        self.batch_size = batch_size
        self.mesh = mesh
        self.sharding = batch_sharding(mesh)
        self.rows = local_rows(mesh, batch_size)
        self.devices = batch_devices(mesh)  # what a packed batch's row count is a multiple of
        self._local = {batch_size: self.rows}  # leading size -> this process's part of it

    def local(self, size: int) -> np.ndarray:
        """This process's indices along a leading axis of `size` (a packed batch's
        row counts and slots), worked out once per size."""
        if size not in self._local:
            self._local[size] = local_rows(self.mesh, size)
        return self._local[size]

    def __call__(self, data, indices, length: int) -> dict:
        if isinstance(indices, packing.Packed):
            # Rows and slots are two leading sizes; the batch is built whole and
            # each process keeps its part of each.
            whole = batching.make_batch(data, indices, length, self.batch_size)
            local = {k: v[self.local(len(v))] for k, v in whole.items()}
            sizes = {k: len(v) for k, v in whole.items()}
        else:
            local = batching.make_batch(data, indices, length, self.batch_size, rows=self.rows)
            sizes = dict.fromkeys(local, self.batch_size)
        return {k: jax.make_array_from_process_local_data(
                    self.sharding, v, (sizes[k],) + v.shape[1:])
                for k, v in local.items()}


def to_host(tree):
    """Numpy copies of (replicated or fully addressable) arrays, on any process."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if x.is_fully_replicated
                        else np.asarray(jax.device_get(x)), tree)


def gather_to_host(tree):
    """Whole numpy arrays on every process, however they are sharded; gathered a
    leaf at a time (see `host_array`), so every process must call it."""
    return jax.tree.map(host_array, tree)


def host_array(x) -> np.ndarray:
    """One array whole on this host. When its pieces sit on other processes this
    is a collective: every process asks for the same arrays in the same order,
    and the devices hold one extra whole array at a time."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils
        return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)
