"""A shadow model on the device (issue #14): run beside the serving one on a sampled share of
the same inputs, on its own thread, within a CPU budget, its outputs sent nowhere.

* :mod:`~agent.shadow.measures` — agreement per task (Protocol + registry keyed by task).
* :mod:`~agent.shadow.runner` — the bounded hand-over, the budget, the worker, the report.
"""

from agent.shadow.measures import MEASURES, Answer, Comparison, Measure, Tally
from agent.shadow.runner import Pair, ShadowRunner

__all__ = ["MEASURES", "Answer", "Comparison", "Measure", "Pair", "ShadowRunner", "Tally"]
