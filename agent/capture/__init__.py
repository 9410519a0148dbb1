"""The fleet's eyes on the device: input statistics and hard-example capture (issue #13).

* :mod:`~agent.capture.stats` — statistics on the manifest's reference bins.
* :mod:`~agent.capture.samplers` — one rule per capture reason (Protocol + registry).
* :mod:`~agent.capture.budget` — per hour / per day / bytes per day.
* :mod:`~agent.capture.queue` — the crash-safe disk queue within the disk budget.
* :mod:`~agent.capture.uploader` — resumable, rate-limited upload with the device token.
* :mod:`~agent.capture.capturer` — the per-inference glue the pipeline calls.
"""

from agent.capture.budget import CaptureBudget
from agent.capture.capturer import Capturer
from agent.capture.config import CaptureConfig
from agent.capture.queue import SampleQueue
from agent.capture.uploader import Uploader

__all__ = ["CaptureBudget", "CaptureConfig", "Capturer", "SampleQueue", "Uploader"]
