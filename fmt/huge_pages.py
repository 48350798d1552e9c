"""Transparent huge pages for XLA:CPU's buffers, through glibc's malloc.

XLA:CPU allocates each step's temporaries afresh, and glibc serves large blocks
with mmap, so every step page-faults its working set back in: about 48,000
4 KiB faults per MiniLM step on SST-2's packed batches, 16% of the step (bench.py
--profile). With the tunable `glibc.malloc.hugetlb=1` (glibc 2.35+), malloc
asks the kernel for 2 MiB pages (madvise MADV_HUGEPAGE), the faults fall
~50-fold and the step runs 16% faster (experiments/results/bench_cpu.md).

glibc reads tunables only when a process starts, so the command-line scripts
call `reexec()` first: it starts the same command again with the tunable set
(same PID, same arguments). `FMT_HUGE_PAGES=0` turns it off; it also does
nothing where it cannot help: not Linux, glibc older than 2.35, or transparent
huge pages set to `never`. Imports nothing heavy, so it costs nothing before
the exec.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def supported() -> bool:
    """Linux with glibc 2.35 or newer and transparent huge pages not `never`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        if name != "glibc" or tuple(map(int, version.split(".")[:2])) < (2, 35):
            return False
        with open(THP_SETTING) as setting:
            return "[never]" not in setting.read()
    except (ValueError, OSError, AttributeError):
        return False


def environment(env=None) -> dict:
    """`env` (default os.environ) with the tunable added to GLIBC_TUNABLES,
    unless FMT_HUGE_PAGES=0, the tunable is there already, or it cannot help."""
    env = dict(os.environ if env is None else env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if env.get("FMT_HUGE_PAGES") == "0" or "glibc.malloc.hugetlb" in tunables or not supported():
        return env
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec() -> None:
    """Start this same command again with the tunable set (does not return),
    or return at once if it is set already or does not apply."""
    env = environment()
    if env != dict(os.environ):
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
        except OSError:  # the run goes on with ordinary pages
            return
