"""Where a compiled step's time goes, op by op: a jax.profiler trace of its runs,
read against the step's optimized HLO (bench.py --profile).

Every thunk XLA:CPU runs is one trace event naming its HLO instruction. Each
instruction's `op_name` metadata says which JAX primitive it came from and in
which phase: `transpose(jvp(...))` is the backward pass, `jvp(...)` the
forward, what runs under the step's `cond` (the optimizer update) is
`update`, and the rest (the gradient norm, the RNG, copies without metadata) is
`other`. A fusion is named after its root
primitive, and marked `dot` when it holds a matmul. Containers (conditionals,
loops, calls) are not counted: their bodies' thunks are.
"""

import collections
import glob
import gzip
import json
import re
import tempfile

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+|\(.*?\)) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_CONTAINERS = {"conditional", "while", "call", "tuple", "get-tuple-element", "parameter",
               "constant", "bitcast"}


def _phase(op_name: str) -> str:
    if "transpose(jvp" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    if "cond" in op_name or "branch" in op_name:
        return "update"
    return "other"


def _primitive(op_name: str) -> str:
    return op_name.rsplit("/", 1)[-1] if op_name else "?"


def parse_hlo(text: str) -> dict[str, dict]:
    """Instruction name -> {opcode, shape, phase, primitive, dot} for every
    instruction of the module (fused computations' own instructions only mark
    their fusion as holding a dot)."""
    ops, calls, dots, computation = {}, {}, set(), None
    for line in text.splitlines():
        if (match := _COMPUTATION.match(line)) and "=" not in line.split("{")[0]:
            computation = match.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode, rest = match.groups()
        op_name = re.search(r'op_name="([^"]*)"', rest)
        op_name = op_name.group(1) if op_name else ""
        if opcode in ("dot", "convolution") or "dot_general" in op_name:
            dots.add(computation)
        callee = re.search(r"calls=%?([\w.\-]+)", rest)
        if callee:
            calls[name] = callee.group(1)
        ops[name] = dict(opcode=opcode, shape=shape, phase=_phase(op_name),
                         primitive=_primitive(op_name), computation=computation,
                         dot="dot_general" in op_name)
    for name, op in ops.items():
        op["dot"] = (op["dot"] or op["opcode"] in ("dot", "convolution")
                     or calls.get(name) in dots)
    return ops


def trace_ops(run, steps: int) -> dict[str, float]:
    """Seconds per step of each HLO instruction while `run()` executes `steps`
    steps under jax.profiler (summed over threads)."""
    import jax
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            run()
        [path] = glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]
    seconds = collections.Counter()
    for event in events:
        op = event.get("args", {}).get("hlo_op")
        if event.get("ph") == "X" and op:
            seconds[op] += event["dur"] * 1e-6 / steps
    return seconds


def breakdown(ops: dict[str, dict], seconds: dict[str, float], step_s: float,
              top: int = 15) -> dict:
    """Shares of the step: by phase, by kind (matmul or the primitive), and the
    `top` most costly instructions."""
    rows = []
    for name, s in seconds.items():
        op = ops.get(name, dict(opcode="?", shape="?", phase="?", primitive="?", dot=False))
        if op["opcode"] in _CONTAINERS:
            continue
        kind = "matmul" if op["dot"] else op["primitive"]
        rows.append(dict(op=name, ms=1000 * s, share=s / step_s, phase=op["phase"], kind=kind,
                         shape=op["shape"]))
    by_phase, by_kind = collections.Counter(), collections.Counter()
    for row in rows:
        by_phase[row["phase"]] += row["share"]
        by_kind[row["kind"]] += row["share"]
    rows.sort(key=lambda row: -row["ms"])
    return dict(step_ms=1000 * step_s, counted_share=sum(by_phase.values()),
                by_phase=dict(by_phase.most_common()),
                by_kind=dict(by_kind.most_common(12)), top=rows[:top])


def markdown(profile: dict) -> str:
    lines = [f"step {profile['step_ms']:.1f} ms; thunks account for "
             f"{100 * profile['counted_share']:.0f}% of it (summed over threads)",
             "", "| phase | share |", "|---|---:|"]
    lines += [f"| {k} | {100 * v:.1f}% |" for k, v in profile["by_phase"].items()]
    lines += ["", "| kind | share |", "|---|---:|"]
    lines += [f"| {k} | {100 * v:.1f}% |" for k, v in profile["by_kind"].items()]
    lines += ["", "| op | ms | share | phase | kind | shape |", "|---|---:|---:|---|---|---|"]
    lines += [f"| {r['op']} | {r['ms']:.2f} | {100 * r['share']:.1f}% | {r['phase']} | "
              f"{r['kind']} | `{r['shape']}` |" for r in profile["top"]]
    return "\n".join(lines)
