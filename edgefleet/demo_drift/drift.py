"""How the demo's cameras drift: a lower-contrast, noisier sensor.

Why this one: it is what an ageing or dirty camera, a dimmer scene, or a cheaper replacement
sensor does to every frame at once, it moves the input statistics the agents summarise (mean,
spread, histogram) so input drift detectors can see it, and a model trained on crisp digits
loses accuracy on it that retraining on captured frames wins back. Deterministic per seed.
"""

from __future__ import annotations

from typing import Any

#: Contrast kept (0..1), the grey the image fades towards, and the noise's standard deviation
#: (in 0..255 grey levels).
CONTRAST = 0.35
FLOOR = 110.0
NOISE = 22.0


def drift_image(image: Any, *, seed: int) -> Any:
    """An 8-bit grey image as the drifted camera sees it (same shape, uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = image.astype(np.float32) * CONTRAST + FLOOR
    x = x + rng.normal(0.0, NOISE, size=x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
