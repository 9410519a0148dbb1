"""The demo's training command: a digits classifier (scikit-learn logistic regression) trained on
a pipeline snapshot — the fleet's labelled samples (``train.npz``) plus the base data set
(``base.npz``) — and saved as a pickle that ``edgefleet convert`` turns into an artifact.

``--worse`` trains on shuffled labels (a broken training job that still exits 0: the gates must
stop it); ``--crash`` fails half-way with a traceback (the run must fail with its log).
``--mode-from FILE`` reads the mode (``ok``, ``worse`` or ``crash``) from FILE when it exists: the
demo's pipeline keeps one training command, and the demo breaks it between runs the way a bad
change to a team's training code would, without touching the server's settings.

    python -m edgefleet.demo_drift.trainer --snapshot DIR --output model.pkl [--worse|--crash]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MODES = ("ok", "worse", "crash")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgefleet.demo_drift.trainer")
    parser.add_argument("--snapshot", type=Path, required=True, help="pipeline snapshot dir")
    parser.add_argument("--output", type=Path, required=True, help="model file to write (.pkl)")
    parser.add_argument(
        "--fleet-weight",
        type=int,
        default=3,
        help="repeat each fleet sample this often (they are few)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--worse", action="store_true", help="train on shuffled labels")
    mode.add_argument("--crash", action="store_true", help="fail half-way")
    mode.add_argument(
        "--mode-from", type=Path, metavar="FILE", help="read ok|worse|crash from FILE if it exists"
    )
    args = parser.parse_args(argv)
    if args.mode_from is not None and args.mode_from.is_file():
        with args.mode_from.open("rb") as f:  # a few bytes: a mode, never a whole big file
            text = f.read(64).decode("utf-8", "replace").strip()
        if text not in MODES:
            parser.error(f"{args.mode_from}: mode must be one of {', '.join(MODES)}, not {text!r}")
        args.worse, args.crash = text == "worse", text == "crash"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    parts_x, parts_y = [], []
    with np.load(args.snapshot / "train.npz", allow_pickle=False) as fleet:
        fx, fy = fleet["x"], fleet["y"]
    print(f"fleet samples: {len(fy)}")
    parts_x += [fx] * args.fleet_weight
    parts_y += [fy] * args.fleet_weight
    base = args.snapshot / "base.npz"
    if base.is_file():
        with np.load(base, allow_pickle=False) as data:
            parts_x.append(data["x"])
            parts_y.append(data["y"])
        print(f"base samples: {len(parts_y[-1])}")
    x = np.concatenate(parts_x).astype(np.float32)
    y = np.concatenate(parts_y).astype(np.int64)
    if args.crash:
        raise RuntimeError("demo trainer: simulated crash after loading the data (--crash)")
    if args.worse:
        y = np.random.default_rng(0).permutation(y)
    # On shuffled labels the solver never converges: 300 iterations took 83 s on a loaded
    # 2-core machine for nothing; a broken job is as broken after 30.
    model = LogisticRegression(max_iter=30 if args.worse else 300).fit(x, y)
    print(f"training accuracy: {model.score(x, y):.4f} on {len(y)} rows")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
