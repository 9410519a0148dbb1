"""Network faults for hardware-in-the-loop runs: agents in network namespaces behind veth
pairs with kernel faults (rate, loss, link down, unreachable host) and a delaying relay."""

from hil.netfaults.errors import NetFaultError
from hil.netfaults.netns import NetNamespace, missing_tools
from hil.netfaults.relay import Relay

__all__ = ["NetFaultError", "NetNamespace", "Relay", "missing_tools"]
