"""Run records: `metrics.jsonl` (one JSON object per logged step) and TensorBoard."""

import json
import pathlib

import numpy as np

from fmt.files import write_text_atomic


class MetricWriter:
    """Appends to `workdir/metrics.jsonl` and TensorBoard events; a no-op off process 0."""

    def __init__(self, workdir: pathlib.Path, enabled: bool = True, resume_step: int = 0):
        """`resume_step`: lines logged after it came from a run that died before its
        next checkpoint; they are dropped, and the resumed run writes them again."""
        self.enabled = enabled
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        path = workdir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                    if line.endswith("\n") and json.loads(line)["step"] <= resume_step]
            tmp = path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            tmp.replace(path)
        self._jsonl = open(path, "a", encoding="utf-8")
        self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: _plain(v) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self._tb.add_scalar(name, value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def _plain(value):
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "dtype"):
        value = np.asarray(value).item()
    return value


def write_json_atomic(path: pathlib.Path, obj) -> None:
    """Write JSON so that a reader never sees half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
