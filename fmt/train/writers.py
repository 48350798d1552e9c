"""Run records: `metrics.jsonl` (one JSON object per logged step) and TensorBoard,
in a workdir on any file system that fmt.files reaches (local or gs://, ...)."""

import io
import json

import numpy as np

from fmt.files import as_path, is_local, write_bytes_atomic, write_text_atomic


class MetricWriter:
    """Writes `workdir/metrics.jsonl` and TensorBoard events; a no-op off process 0.

    metrics.jsonl is rewritten whole (atomically) at every write rather than
    appended to: object stores cannot append, and the file stays small (a line
    per logged step).
    """

    def __init__(self, workdir, enabled: bool = True, resume_step: int = 0):
        """`resume_step`: lines logged after it came from a run that died before its
        next checkpoint; they are dropped, and the resumed run writes them again."""
        self.enabled = enabled
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        self._path = as_path(workdir) / "metrics.jsonl"
        self._lines = []
        if self._path.exists():
            self._lines = [line for line in
                           self._path.read_text(encoding="utf-8").splitlines(keepends=True)
                           if line.endswith("\n") and json.loads(line)["step"] <= resume_step]
        write_text_atomic(self._path, "".join(self._lines))
        events = str(as_path(workdir) / "tensorboard")
        if not is_local(events):
            _register_tensorboard_scheme(events.partition(":")[0])
        self._tb = SummaryWriter(events)

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: _plain(v) for k, v in values.items()}
        self._lines.append(json.dumps({"step": int(step), **values}) + "\n")
        write_text_atomic(self._path, "".join(self._lines))
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self._tb.add_scalar(name, value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


def _plain(value):
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "dtype"):
        value = np.asarray(value).item()
    return value


def write_json_atomic(path, obj) -> None:
    """Write JSON so that a reader never sees half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class _EventFile:
    """A TensorBoard event file on a non-local path: the records so far, written
    whole at every flush (object stores cannot append)."""

    def __init__(self, path: str):
        self.path, self.buffer = path, io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        write_bytes_atomic(self.path, self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _EventFiles:
    """tensorboardX's writer factory for a scheme, through fmt.files' one path type
    (its own gs:// writer needs google-cloud-storage and its own credentials)."""

    def open(self, path: str) -> _EventFile:
        return _EventFile(path)

    def directory_check(self, path: str) -> None:
        as_path(path).mkdir(parents=True, exist_ok=True)


def _register_tensorboard_scheme(scheme: str) -> None:
    from tensorboardX import record_writer
    record_writer.register_writer_factory(scheme, _EventFiles())
