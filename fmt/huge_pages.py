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
_NAME = TUNABLE.split("=")[0]
# Set in the re-executed process, so that it never execs again: glibc ignores
# GLIBC_TUNABLES in secure-execution (setuid) processes, where the tunable would
# look missing at every start.
_DONE = "FMT_HUGE_PAGES_REEXECED"
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


def environment(env=None, on: bool = True) -> dict:
    """`env` (default os.environ) with the tunable added to GLIBC_TUNABLES,
    unless FMT_HUGE_PAGES=0, the tunable is there already, or it cannot help.
    With `on` False, the opposite: the tunable taken out and FMT_HUGE_PAGES=0
    set, so that neither this environment nor fmt's scripts use huge pages."""
    env = dict(os.environ if env is None else env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if not on:
        kept = [t for t in tunables.split(":") if t and t.split("=")[0] != _NAME]
        env.pop("GLIBC_TUNABLES", None)
        if kept:
            env["GLIBC_TUNABLES"] = ":".join(kept)
        env["FMT_HUGE_PAGES"] = "0"
        return env
    if env.get("FMT_HUGE_PAGES") == "0" or _NAME in tunables or not supported():
        return env
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec() -> None:
    """Start this same command again with the tunable set (does not return),
    or return at once if it is set already, does not apply, this process was
    re-executed already, or the command cannot be started again (an
    interactive session, a notebook, a program read from stdin)."""
    if (os.environ.get(_DONE) or len(sys.orig_argv) < 2 or sys.orig_argv[1] == "-"
            or hasattr(sys, "ps1") or sys.flags.interactive or "IPython" in sys.modules):
        return
    env = environment()
    if env != dict(os.environ):
        env[_DONE] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
        except OSError:  # the run goes on with ordinary pages
            return
