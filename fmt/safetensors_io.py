"""The safetensors format, read by the slice and written by the tensor.

A file is an 8-byte little-endian header length, a JSON header (each tensor's
dtype, shape and byte range, and `__metadata__`), then the tensors' bytes in C
order. fmt reads and writes it itself rather than through `safetensors`:

- a slice costs the bytes of that slice (one read per contiguous run), so each
  process of a run reads only what its devices hold, and the bytes it read are
  counted (`READS`);
- bf16 and float8 tensors are numpy arrays (ml_dtypes), which safetensors'
  numpy API refuses, so a bf16 checkpoint loads and a bf16 model saves as bf16;
- files open through `etils.epath`, so a `gs://` folder reads and writes too;
- an export streams one tensor at a time into shard files named and indexed as
  `transformers` names them (`write_shards`).
"""

import dataclasses
import functools
import json
import os
import struct
from typing import Callable

import ml_dtypes
import numpy as np
from etils import epath

from fmt.errors import UserError
from fmt.files import is_local

DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
          "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64,
          "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32, "F64": np.float64,
          "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}
DTYPE_NAMES = {np.dtype(dtype): name for name, dtype in DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER = 100 * 2 ** 20  # safetensors' own limit: a longer one is not a header
_SIZE_UNITS = {"KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12}


class ReadCounter:
    """Bytes this process has read from safetensors files, headers included."""

    def __init__(self):
        self.bytes = 0
        self.reads = 0


READS = ReadCounter()


class SafetensorsFile:
    """One file's header, and reads of byte runs from it.

    The file is opened for each read, so no handle outlives it; a local file
    that changed since its header was read is an error rather than a misread
    (a folder exported over the one a lazy model was loaded from).
    """

    def __init__(self, path):
        self.path = epath.Path(path)
        with self._open() as file:
            self._stamp = _stamp(file)
            (length,) = struct.unpack("<Q", _read(file, 0, 8, self.path))
            if length > _MAX_HEADER:
                raise UserError(f"{self.path}: not a safetensors file (its header would be "
                                f"{length} bytes); download or save the checkpoint again")
            try:
                header = json.loads(_read(file, 8, length, self.path))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserError(f"{self.path}: damaged safetensors header ({e}); download or "
                                "save the checkpoint again") from None
        READS.bytes += 8 + length
        self.data_start = 8 + length
        self.metadata = header.pop("__metadata__", None) or {}
        self.tensors = {name: self._tensor(name, entry) for name, entry in header.items()}

    def _tensor(self, name: str, entry: dict) -> "StoredTensor":
        if entry.get("dtype") not in DTYPES:
            raise UserError(f"{self.path}: tensor {name} has dtype {entry.get('dtype')!r}, which "
                            f"fmt cannot read; save the checkpoint in F32, F16 or BF16")
        tensor = StoredTensor(self, name, np.dtype(DTYPES[entry["dtype"]]),
                              tuple(int(n) for n in entry["shape"]), int(entry["data_offsets"][0]))
        begin, end = entry["data_offsets"]
        if end - begin != tensor.nbytes:
            raise UserError(f"{self.path}: tensor {name} spans {end - begin} bytes but its shape "
                            f"{tensor.shape} needs {tensor.nbytes}; the file is damaged, download "
                            "or save it again")
        return tensor

    def _open(self):
        if is_local(self.path):  # unbuffered: each run is one read of its own bytes
            return open(os.fspath(self.path), "rb", buffering=0)
        return self.path.open("rb")

    def read_runs(self, offsets: np.ndarray, run: int, out: np.ndarray) -> None:
        """Fill `out` (C-contiguous) with the `run`-byte ranges that start at
        `offsets` (counted from the data's start), one after another."""
        if not len(offsets) or not run:
            return
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        with self._open() as file:
            if _stamp(file) != self._stamp:
                raise UserError(f"{self.path} changed after fmt read its header; load the "
                                "model again")
            for i, offset in enumerate(offsets.tolist()):
                _read_into(file, self.data_start + offset, buffer[i * run:(i + 1) * run],
                           self.path)
        READS.bytes += len(offsets) * run
        READS.reads += len(offsets)


def _stamp(file) -> tuple | None:
    """What identifies a local file's contents cheaply: size, mtime and inode."""
    if not hasattr(file, "fileno"):
        return None
    try:
        status = os.fstat(file.fileno())
    except (OSError, ValueError):  # a remote file object without a descriptor
        return None
    return status.st_size, status.st_mtime_ns, status.st_ino


def _read(file, offset: int, size: int, path) -> bytes:
    buffer = bytearray(size)
    _read_into(file, offset, memoryview(buffer), path)
    return bytes(buffer)


def _read_into(file, offset: int, buffer: memoryview, path) -> None:
    """Exactly len(buffer) bytes from `offset`: a short file is a damaged one."""
    done = 0
    fileno = file.fileno() if is_local(path) else None
    while done < len(buffer):
        if fileno is not None:
            count = os.preadv(fileno, [buffer[done:]], offset + done)
        else:
            file.seek(offset + done)
            chunk = file.read(len(buffer) - done)
            count = len(chunk)
            buffer[done:done + count] = chunk
        if count == 0:
            raise UserError(f"{path}: the file ends before its tensors do; it is truncated, "
                            "download or save it again")
        done += count


@dataclasses.dataclass(frozen=True, eq=False)
class StoredTensor:
    """One tensor of a file, read only when asked: `tensor[index]` reads the
    bytes of that box (slices with step 1; other indices read it whole first),
    `np.asarray(tensor)` all of it."""
    file: SafetensorsFile
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # from the start of the file's data

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __getitem__(self, index) -> np.ndarray:
        bounds = box(index, self.shape)
        if bounds is None:
            return np.asarray(self)[index]
        out = np.empty([high - low for low, high in bounds], self.dtype)
        offsets, run = byte_runs(self.shape, bounds, self.dtype.itemsize)
        self.file.read_runs(self.offset + offsets, run, out)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        value = self[(slice(None),) * len(self.shape)]
        return value if dtype is None else value.astype(dtype, copy=False)


def box(index, shape: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """[(start, stop)] per axis of a basic index of slices with step 1 (what
    `make_array_from_callback` asks for); None for any other index."""
    index = index if isinstance(index, tuple) else (index,)
    if len(index) > len(shape) or not all(isinstance(s, slice) for s in index):
        return None
    bounds = []
    for dim, part in zip(shape, index + (slice(None),) * (len(shape) - len(index))):
        start, stop, step = part.indices(dim)
        if step != 1:
            return None
        bounds.append((start, max(start, stop)))
    return bounds


def byte_runs(shape: tuple[int, ...], bounds, itemsize: int) -> tuple[np.ndarray, int]:
    """Where a box of a C-order tensor lies: the byte offset of each contiguous
    run, in C order, and the run's length. From the innermost axis that the box
    does not take whole, the rest of the box is contiguous: one run per index of
    the axes before it."""
    if not shape:
        return np.zeros(1, np.int64), itemsize
    strides = np.cumprod((1,) + tuple(shape[:0:-1]), dtype=np.int64)[::-1] * itemsize
    axis = len(shape) - 1
    while axis > 0 and bounds[axis] == (0, shape[axis]):
        axis -= 1
    low, high = bounds[axis]
    run = (high - low) * int(strides[axis])
    starts = [np.arange(lo, hi, dtype=np.int64) * int(stride)
              for (lo, hi), stride in zip(bounds[:axis], strides[:axis])]
    offsets = functools.reduce(np.add.outer, starts, np.int64(low * int(strides[axis])))
    return np.ravel(offsets), run


def open_folder(folder) -> dict[str, StoredTensor] | None:
    """Every tensor of a folder's `model.safetensors`, or of its sharded set by
    the index; None when it has neither. Only headers are read."""
    folder = epath.Path(folder)
    if (folder / SINGLE_FILE).exists():
        return dict(SafetensorsFile(folder / SINGLE_FILE).tensors)
    index = folder / INDEX_FILE
    if not index.exists():
        return None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{index}: not a safetensors index ({type(e).__name__}: {e}); download "
                        "or save the checkpoint again") from None
    files = {name: SafetensorsFile(folder / name) for name in sorted(set(weight_map.values()))}
    tensors = {}
    for name, file_name in weight_map.items():
        if name not in files[file_name].tensors:
            raise UserError(f"{folder / file_name}: no tensor {name}, which {INDEX_FILE} places "
                            "there; the set is incomplete, download or save it again")
        tensors[name] = files[file_name].tensors[name]
    return tensors


# --- writing ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PendingTensor:
    """A tensor to write: its name, shape and dtype now, its values when `read()`."""
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @classmethod
    def of(cls, name: str, value: np.ndarray) -> "PendingTensor":
        value = np.asarray(value)
        return cls(name, tuple(value.shape), value.dtype, lambda: value)


def parse_size(size: int | str) -> int:
    """Bytes from an int or a size such as "5GB" or "500MB" (units of 1000, as
    `transformers`' max_shard_size)."""
    text = str(size).strip().upper()
    try:
        if text.isdigit():
            return int(text)
        return int(float(text[:-2]) * _SIZE_UNITS[text[-2:]])
    except (ValueError, KeyError):
        raise UserError(f"max_shard_size={size!r}: give a number of bytes or a size such as "
                        "'5GB' or '500MB'") from None


def plan_shards(tensors: list[PendingTensor], max_bytes: int) -> list[list[PendingTensor]]:
    """`transformers`' split, in order: a tensor that would take a shard past
    `max_bytes` starts the next one; a tensor larger than that is a shard alone."""
    shards, current, size = [], [], 0
    for tensor in tensors:
        if tensor.nbytes > max_bytes:
            shards.append([tensor])
            continue
        if current and size + tensor.nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(tensor)
        size += tensor.nbytes
    if current or not shards:
        shards.append(current)
    return shards


def write_shards(folder, tensors: list[PendingTensor], max_shard_size: int | str = "5GB",
                 metadata: dict | None = None) -> list[str]:
    """Write `tensors` into `folder` as `model.safetensors`, or, past
    `max_shard_size`, as `model-0000i-of-0000n.safetensors` files with the index
    `transformers` writes; each tensor is read when its turn comes, so one is
    held at a time. Returns the file names."""
    folder = epath.Path(folder)
    shards = plan_shards(list(tensors), parse_size(max_shard_size))
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        write_file(folder / name, shard, {"format": "pt", **(metadata or {})})
    if len(shards) > 1:
        index = {"metadata": {"total_parameters": sum(t.nbytes // np.dtype(t.dtype).itemsize
                                                      for t in tensors),
                              "total_size": sum(t.nbytes for t in tensors)},
                 "weight_map": {t.name: name for name, shard in zip(names, shards) for t in shard}}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        names.append(INDEX_FILE)
    return names


def write_file(path, tensors: list[PendingTensor], metadata: dict) -> None:
    """One safetensors file, its header first (the offsets follow from the
    shapes), then each tensor's bytes as it is read."""
    header, offset = {"__metadata__": metadata}, 0
    for tensor in tensors:
        if np.dtype(tensor.dtype) not in DTYPE_NAMES:
            raise UserError(f"{path}: tensor {tensor.name} has dtype {tensor.dtype}, which "
                            "safetensors cannot hold")
        header[tensor.name] = {"dtype": DTYPE_NAMES[np.dtype(tensor.dtype)],
                               "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors does
    with epath.Path(path).open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        for tensor in tensors:
            value = tensor.read()
            if tuple(value.shape) != tuple(tensor.shape) or value.dtype != tensor.dtype:
                raise ValueError(f"{tensor.name}: read {value.dtype}{list(value.shape)}, "
                                 f"announced {np.dtype(tensor.dtype)}{list(tensor.shape)}")
            file.write(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
