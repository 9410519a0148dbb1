"""The retraining pipeline the server drives (issue #15): typed config (``config``), run and step
state with one owner (``records``), steps in a registry (``steps``), the leader job that
advances runs (``driver``), and what the API and the retraining backends call (``service``,
``backend``)."""
