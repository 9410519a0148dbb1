"""EdgeFleet: the shared contract and the ``edgefleet`` command.

This package must stay light: it is installed on every device. It imports msgspec and the
standard library only; each part's heavy dependencies are imported lazily by that part.
"""

__version__ = "0.1.0"
