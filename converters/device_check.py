"""An artifact that converts is an artifact that runs: the converter loads what it wrote with
the agent's own engine (verify → load → warm-up → self-test) before it reports success.

Issue #12: a fixed-batch TFLite model converted with exit 0 and then every device refused its
self-test (four rows stacked for a batch-1 model). Checking with the device's code, not a copy
of its rules, catches every such disagreement. The agent is imported lazily: it imports nothing
from the converter, so the dependency stays one-way.
"""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConvertError, one_line


def check_on_device_engine(directory: Path) -> None:
    """ConvertError (one line) when the agent's engine refuses the artifact at ``directory``."""
    from agent.engine import BackendOptions, load_model
    from agent.errors import AgentError

    try:
        load_model(directory, options=BackendOptions(threads=1))
    except AgentError as err:
        raise ConvertError(
            f"the artifact does not load in the agent's engine: {one_line(err)}"
        ) from err
