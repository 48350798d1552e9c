"""fmt/huge_pages.py: the tunable, the re-exec, and the page faults it saves."""

import os
import subprocess
import sys

import pytest

from fmt import huge_pages

needs_support = pytest.mark.skipif(not huge_pages.supported(),
                                   reason="needs Linux, glibc 2.35+ and transparent huge pages")


def _thp_madvise() -> bool:
    try:
        with open(huge_pages.THP_SETTING) as setting:
            return "[madvise]" in setting.read()
    except OSError:
        return False


# With THP `[always]` plain malloc gets huge pages too, and there is nothing to cut.
needs_madvise = pytest.mark.skipif(not (huge_pages.supported() and _thp_madvise()),
                                   reason="needs transparent huge pages set to madvise")
_OURS = ("GLIBC_TUNABLES", "FMT_HUGE_PAGES", "FMT_HUGE_PAGES_REEXECED")

# A jitted step whose 64 MB temporary XLA:CPU allocates afresh at every call; prints
# the minor page faults per call.
_STEPS = """
import resource, jax, jax.numpy as jnp
{prefix}
f = jax.jit(lambda x, w: (jnp.sin(x) @ w).sum())  # sin(x) is a matmul's input: a buffer
x, w = jnp.ones((4096, 4096)), jnp.ones((4096, 8))
f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x, w).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _run(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in _OURS}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**environ, **env}, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_environment_adds_the_tunable_once_and_keeps_others():
    env = huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    if huge_pages.supported():
        assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{huge_pages.TUNABLE}"
    else:
        assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert huge_pages.environment(env) == env
    off = {"FMT_HUGE_PAGES": "0"}
    assert huge_pages.environment(off) == off
    # Off: the tunable taken out, the others kept, and fmt's scripts told not to add it.
    both = {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{huge_pages.TUNABLE}"}
    assert huge_pages.environment(both, on=False) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "FMT_HUGE_PAGES": "0"}
    assert huge_pages.environment({"GLIBC_TUNABLES": huge_pages.TUNABLE}, on=False) == off


@needs_support
def test_reexec_restarts_the_same_command_with_the_tunable():
    code = ("import os, sys; from fmt import huge_pages; print('start', os.getpid()); "
            "huge_pages.reexec(); print(os.environ.get('GLIBC_TUNABLES'), os.getpid(), "
            "sys.argv[1:])")
    environ = {k: v for k, v in os.environ.items() if k not in _OURS}
    result = subprocess.run([sys.executable, "-c", code, "--flag=1"], capture_output=True,
                            text=True, env=environ, check=True)
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first.startswith("start") and second.startswith("start") is False
    tunables, pid, argv = second.split(" ", 2)
    assert tunables == huge_pages.TUNABLE
    assert pid == first.split()[1]  # exec: the same process
    assert argv == "['--flag=1']"
    assert _run(code, FMT_HUGE_PAGES="0").startswith("None")
    # Once re-executed, never again, even where the tunable did not stick.
    assert _run(code, FMT_HUGE_PAGES_REEXECED="1").startswith("None")


def test_reexec_leaves_a_program_from_stdin_alone():
    code = "import os; from fmt import huge_pages; huge_pages.reexec(); print(os.getpid())"
    environ = {k: v for k, v in os.environ.items() if k not in _OURS}
    result = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True,
                            env=environ, check=True)
    assert result.stdout.strip().isdigit()  # ran once, and on: stdin could not be read twice


@needs_madvise
def test_huge_pages_cut_the_page_faults_of_each_step():
    plain = float(_run(_STEPS.format(prefix="")))
    huge = float(_run(_STEPS.format(prefix="from fmt import huge_pages; huge_pages.reexec()")))
    assert plain > 10_000  # 64 MB of 4 KiB pages faulted in again at every call
    assert huge < plain / 10
