"""A workdir on gs://: every writer of a run (config, metrics.jsonl, TensorBoard,
checkpoints, predictions, results, the export) goes through one path type, here
against a GCS emulator on 127.0.0.1 (gcp-storage-emulator from the package index).

fmt's own files reach it through etils.epath's fsspec backend (gcsfs reads
STORAGE_EMULATOR_HOST), orbax's arrays through tensorstore's GCS driver
(TENSORSTORE_GCS_HTTP_URL). TensorFlow's own GCS file system has no endpoint
setting, so epath is told not to use it (EPATH_USE_TF=false).
"""

import json
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT, device_env, finetune_command, run_finetune
from test_resume import record, rte_args

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")
BUCKET = "fmt-runs"


def _with_generation_header(download):
    """The emulator's object download, answering with the object's generation in
    `x-goog-generation` as GCS does (the emulator leaves it out); tensorstore reads
    it to rewrite an existing object, such as a checkpoint's OCDBT manifest."""
    def handler(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
        except Exception:  # not found: the download answers 404 itself
            pass
        return download(request, response, storage, *args, **kwargs)
    return handler


@pytest.fixture(scope="module")
def gcs():
    """The emulator's URL; the environment points fmt (and its subprocesses) at it."""
    from gcp_storage_emulator import server as emulator
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.server import create_server
    original = objects.download
    download = _with_generation_header(original)
    patch = pytest.MonkeyPatch()
    patch.setattr(objects, "download", download)  # `get` with alt=media calls it too
    for _, methods in emulator.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is original:
                patch.setitem(methods, method, download)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for name, value in dict(STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
                            GOOGLE_AUTH_TOKEN_FOR_TESTING="emulator", EPATH_USE_TF="false").items():
        patch.setenv(name, value)
    _forget_backend_choice()
    yield url
    patch.undo()
    _forget_backend_choice()
    server.stop()


def _forget_backend_choice():
    """etils.epath decides once per process whether TensorFlow serves gs://; an
    earlier test may have made that choice before EPATH_USE_TF was set."""
    from etils.epath import gpath
    getattr(gpath._is_tf_installed, "cache_clear", lambda: None)()


def _last_checkpoint(workdir) -> int:
    """The newest complete step: on an object store orbax writes a step in place
    and marks it complete with commit_success.txt (there is no rename)."""
    folder = workdir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir()
             if p.name.isdigit() and (p / "commit_success.txt").exists()] \
        if folder.exists() else []
    return max(steps, default=0)


def test_run_killed_and_resumed_on_gcs_equals_a_local_run(gcs, tmp_path, tiny_model):
    from etils import epath
    extra = ["--config.max_steps=12", "--config.checkpoint_every_steps=4",
             "--config.dropout=0.1"]
    local = tmp_path / "local"
    run_finetune(*rte_args(tiny_model, local, *extra))
    remote = epath.Path(f"gs://{BUCKET}/rte")
    args = rte_args(tiny_model, remote, *extra)
    process = subprocess.Popen(finetune_command(*args), cwd=ROOT, env=device_env(1),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while _last_checkpoint(remote) < 4 and process.poll() is None:
        assert time.time() < deadline, "the run never saved a checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (remote / "results.json").exists(), "killed too late to test resuming"
    resumed = run_finetune(*args)
    assert "resumed from the checkpoint at step" in resumed.stderr
    # Bit-exact resume: the same results, exported params and metric lines as locally.
    assert record(remote) == record(local)
    written = {p.name for p in remote.iterdir()}
    assert {"config.json", "metrics.jsonl", "results.json", "checkpoints", "tensorboard",
            "model", "predictions_validation.jsonl"} <= written, written
    events = list((remote / "tensorboard").iterdir())
    assert events and all(e.name.startswith("events.out.tfevents") for e in events)
    assert any(e.stat().length > 100 for e in events)
    model = {p.name for p in (remote / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= model, model
    assert json.loads((remote / "config.json").read_text())["max_steps"] == 12


def test_model_folder_on_gcs_trains_as_the_local_one(gcs, tmp_path, tiny_model):
    """--config.model=gs://...: weights read in place (slice by slice), the tokenizer
    through a local copy; the run equals the one from the local folder."""
    from etils import epath
    remote_model = epath.Path(f"gs://{BUCKET}/models/tiny-bert")
    remote_model.mkdir(parents=True, exist_ok=True)
    for path in tiny_model.iterdir():
        (remote_model / path.name).write_bytes(path.read_bytes())
    extra = ["--config.max_steps=4", "--config.checkpoint_every_steps=4"]
    run_finetune(*rte_args(tiny_model, tmp_path / "local", *extra))
    run_finetune(*rte_args(remote_model, tmp_path / "remote", *extra))
    assert record(tmp_path / "remote") == record(tmp_path / "local")
