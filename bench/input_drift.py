"""False-alarm rate and detection delay of the input drift detectors.

Undrifted: windows of ``n`` inputs drawn from the same generator as the manifest's reference
(500 calibration images; tests/utils/inputs.py: dark images with 10–30 % bright strokes, each
image different), judged once each — the share judged ``drift`` is the false-alarm rate per
evaluation. Drifted: a stream of intervals of ``--per-interval`` inputs (a small fleet: 4
devices × 20 sampled inputs) whose images are darkened, inverted or noisy; the delay is the
number of intervals until the detector (on the growing window) first says drift.

    python bench/input_drift.py [--windows 400] [--trials 50] [--per-interval 80]

Images are drawn from a pool of pre-computed per-image histograms (bootstrap), so the run
takes seconds; class counts are drawn as multinomials of 5 predictions per input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from fleet_server.services.drift.aggregate import Aggregate
    from fleet_server.services.drift.detectors import DriftConfig, detectors_for
    from tests.utils import inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--per-interval", type=int, default=80)
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    ref_stats = inputs.reference_stats(rng)
    labels = inputs.LABELS
    reference = Aggregate(
        input_samples=ref_stats["samples"],
        input_histograms=ref_stats["channel_histograms"],
        source="manifest",
        class_counts={
            labels[i]: round(ref_stats["samples"] * s) for i, s in enumerate(inputs.CLASS_SHARES)
        },
        class_source="manifest",
    )
    names = ("input_psi", "input_js", "input_class_shift")
    config = DriftConfig.model_validate({name: {"min_samples": 50} for name in names})
    detectors = [d for d in detectors_for(config) if d.name.startswith("input_")]
    # The same detectors with the effect floor out of the way: the null bar alone decides
    # (shows how conservative the bound is, and what the floor adds).
    bare = DriftConfig.model_validate(
        {name: {"min_samples": 50, "threshold": 1e-6} for name in names}
    )
    bare_detectors = [d for d in detectors_for(bare) if d.name.startswith("input_")]

    def pool(shift: inputs.Shift, size: int = 4000) -> np.ndarray:
        chunks = [
            [inputs.histogram(img) for img in inputs.images(rng, 200, shift)]
            for _ in range(size // 200)
        ]
        return np.asarray([h for chunk in chunks for h in chunk], dtype=np.int64)

    def window(images: np.ndarray, n: int, shares: list[float]) -> Aggregate:
        picked = images[rng.integers(0, len(images), n)].sum(axis=0)
        counts = rng.multinomial(5 * n, shares)
        return Aggregate(
            input_samples=n,
            input_histograms=[[int(x) for x in picked]],
            class_counts={labels[i]: int(c) for i, c in enumerate(counts)},
        )

    started = time.perf_counter()
    clean = pool("none")
    print(f"false alarms on undrifted windows ({args.windows} windows each, alpha 0.001):")  # noqa: T201
    for n in (50, 100, 500, 2000, 10_000):
        alarms = dict.fromkeys((d.name for d in detectors), 0)
        bare_alarms = dict.fromkeys((d.name for d in detectors), 0)
        for _ in range(args.windows):
            w = window(clean, n, inputs.CLASS_SHARES)
            for d in detectors:
                alarms[d.name] += d.evaluate(w, reference).status == "drift"
            for d in bare_detectors:
                bare_alarms[d.name] += d.evaluate(w, reference).status == "drift"
        rates = ", ".join(f"{k} {v / args.windows:.4f}" for k, v in alarms.items())
        bare_rates = ", ".join(f"{v / args.windows:.4f}" for v in bare_alarms.values())
        print(f"  n={n:>6}: {rates} (null bar alone: {bare_rates})")  # noqa: T201
    print(f"detection delay, intervals of {args.per_interval} inputs (median / max):")  # noqa: T201
    shifted_classes = [0.1, 0.1, 0.3, 0.5]
    for shift in ("slight", "dim", "darken", "invert", "noise"):
        images = pool(shift, 2000)
        classes = inputs.CLASS_SHARES if shift in ("slight", "dim") else shifted_classes
        delays: dict[str, list[int]] = {d.name: [] for d in detectors}
        for _ in range(args.trials):
            total = Aggregate()
            for interval in range(1, 21):
                w = window(images, args.per_interval, classes)
                total.add_inputs(w.input_samples, w.input_histograms, 0, dict(w.class_counts))
                for d in detectors:
                    if len(delays[d.name]) < _ + 1 and d.evaluate(total, reference).status == (
                        "drift"
                    ):
                        delays[d.name].append(interval)
        summary = ", ".join(
            f"{k} {int(np.median(v)) if v else '-'} / {max(v) if v else '-'}"
            for k, v in delays.items()
        )
        print(f"  {shift:>6}: {summary}")  # noqa: T201
    print(f"({time.perf_counter() - started:.1f} s)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
