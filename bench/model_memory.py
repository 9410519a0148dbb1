"""RSS a model's runtime session adds, per MB of its file, per backend: the figures behind
``agent.memory.FILE_FACTORS`` (the memory budget's estimate before a model is loaded).

Each file in a fresh process (median of 3): import the runtime, then RSS before and after a
session with the agent's engine options (one thread) and one run on zeros (dynamic dims as 1).
Weights show as the slope over model size (MLPs); activations as what real conv nets add on top.

    PYTHONPATH=. python bench/model_memory.py MODEL.onnx|MODEL.tflite ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

#: One model file's session cost in a fresh process: RSS after import, after session + one run
#: (zeros, dynamic dims as 1) with the agent's engine options.
FACTOR_PROBE = r"""
import os, sys
import numpy as np
def rss():
    status = open("/proc/self/status").read().splitlines()
    return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024
path = sys.argv[1]
if path.endswith(".onnx"):
    import onnxruntime as ort
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}
    before = rss()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    s.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                                  types.get(i.type, np.float32)) for i in s.get_inputs()})
else:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    before = rss()
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
print(os.path.getsize(path) / 2**20, rss() - before)
"""


def factors(paths: list[Path]) -> None:
    """Session + one run RSS per MB of model file, per file (agent.memory.FILE_FACTORS)."""
    print("  model file -> session + 1 run (fresh process each, median of 3)")
    for path in paths:
        runs = []
        for _ in range(3):
            done = subprocess.run(
                [sys.executable, "-c", FACTOR_PROBE, str(path)],
                capture_output=True,
                text=True,
                env={**os.environ, "MALLOC_ARENA_MAX": "2"},
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            runs.append([float(v) for v in done.stdout.split()[-2:]])
        size, added = sorted(runs, key=lambda r: r[1])[1]
        print(f"    {path.name:44} file {size:6.2f} MB  +{added:6.1f} MB  ({added / size:5.1f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help=".onnx / .tflite files")
    factors(parser.parse_args().models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
