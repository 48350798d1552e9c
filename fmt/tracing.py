"""Counting compilations through a public mechanism: jax traces a jitted
function once for every input shape it compiles, so a counter that the traced
Python body bumps counts the compiled shapes (jit's own cache size is private).
"""

import functools


class Traced:
    """`fn`, counting how many times it has been traced; wrap it before `jax.jit`."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)
