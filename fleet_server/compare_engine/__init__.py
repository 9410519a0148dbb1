"""Differential comparison of two versions of a model, run on the operator's machine.

``compare_artifacts`` loads both artifacts with the agent's engine, runs them on the same
inputs (an ``.npz``, an image folder, or the fleet's labelled samples exported to one), and
returns agreement by the task's measure, labelled accuracy/F1 deltas, both latencies on this
host and the inputs where they disagree most. The client posts the result to the server,
which keeps it with the candidate (``rollouts create --require-compare`` reads it).

Imports numpy, the agent's engine and the converter's data reader: it needs the ``agent``
extra as well as ``cli``.
"""

from fleet_server.compare_engine.engine import compare_artifacts
from fleet_server.compare_engine.errors import CompareError

__all__ = ["CompareError", "compare_artifacts"]
