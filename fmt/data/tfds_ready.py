"""Whether TFDS can give a dataset here: prepared already, or its download
hosts reachable.

Offline, `tfds.load` retries an unreachable host for minutes, then fails with a
message about the last retry, leaving partial folders in its data dir. This
check runs before it: a socket connect per host, seconds in all, and it writes
nothing.
"""

import socket
import urllib.parse
import urllib.request

CONNECT_TIMEOUT_S = 5.0
# Download hosts of builders whose config does not name a `data_url` (GLUE's
# MRPC downloads three files named inside the builder's code).
_KNOWN_HOSTS = {"glue": ("dl.fbaipublicfiles.com", "firebasestorage.googleapis.com")}


def import_tfds(name: str, fix: str):
    """`(tensorflow, tensorflow_datasets)`, imported only by runs that read TFDS (it
    takes seconds, and the packages are an optional extra of 1.5 GB)."""
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError:
        from fmt.errors import UserError
        raise UserError(f"TFDS {name} needs TensorFlow Datasets: pip install -e '.[tfds]' "
                        f"(tensorflow-cpu and tensorflow-datasets); or {fix}") from None
    return tf, tfds


def builder_or_none(tfds, name: str, data_dir: str | None):
    """`tfds.builder(name)`, or None where TFDS cannot make one (the caller's
    `tfds.load` then reports it); making a builder writes nothing."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception:  # TFDS raises many types for an unknown or broken name
        return None


def will_download(tfds, builder) -> bool:
    """Whether `tfds.load` would download: the dataset is not prepared, and
    TFDS is not under `tfds.testing.mock_data` (whose download is a no-op)."""
    # A missing folder is checked first: is_prepared() warns about it as if broken.
    if builder.data_path.exists() and builder.is_prepared():  # epath: gs:// too
        return False
    prepare = tfds.core.DatasetBuilder.download_and_prepare
    return not prepare.__module__.startswith("tensorflow_datasets.testing")


def unreachable_host(builder) -> tuple[str, str] | None:
    """(host, reason) for the first download host of `builder` that a TCP
    connect (through the https proxy, if one is set) does not reach in
    CONNECT_TIMEOUT_S; None when all are reached or none is known."""
    for host, port in _download_hosts(builder):
        target = _proxy_for(host) or (host, port)
        try:
            socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            if target != (host, port):
                reason = f"through the proxy {target[0]}:{target[1]}: {reason}"
            return host, reason
    return None


def _download_hosts(builder) -> list[tuple[str, int]]:
    url = getattr(builder.builder_config, "data_url", None) if builder.builder_config else None
    if url:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
        return [(parsed.hostname, port)] if parsed.hostname else []
    return [(host, 443) for host in _KNOWN_HOSTS.get(builder.name, ())]


def _proxy_for(host: str) -> tuple[str, int] | None:
    """The (host, port) of the https proxy that TFDS's downloads would go through."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parsed.hostname:
        return None
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def check_available(tfds, name: str, data_dir: str | None, fix: str) -> None:
    """Fail in seconds, with the whole message, where `tfds.load(name)` would
    have to download from a host this machine cannot reach; `fix` says what
    to pass instead."""
    from fmt.errors import UserError
    builder = builder_or_none(tfds, name, data_dir)
    if builder is None or not will_download(tfds, builder):
        return
    unreachable = unreachable_host(builder)
    if unreachable is not None:
        host, reason = unreachable
        raise UserError(f"TFDS {name} is not prepared (no {builder.data_dir}) and its download "
                        f"host {host} is not reachable ({reason}); {fix}, or prepare the "
                        "dataset once with network access")


def load(name: str, split: str, data_dir: str | None, fix: str, examples: str):
    """`(tensorflow, tensorflow_datasets, tfds.load(name, split))` for a reader: TFDS imported
    and the dataset checked reachable (else a one-line error saying `fix`), and
    a failing load one line too; `examples` names valid names and splits."""
    from fmt.errors import UserError
    tf, tfds = import_tfds(name, fix)
    check_available(tfds, name, data_dir, f"{fix} instead")
    try:
        return tf, tfds, tfds.load(name, split=split, data_dir=data_dir)
    except Exception as error:  # TFDS raises many types for "not available"
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserError(f"TFDS {name} split {split!r} could not be loaded "
                        f"({type(error).__name__}: {reason}); check the name and split "
                        f"({examples}), or give a data_dir that holds it prepared") from error
