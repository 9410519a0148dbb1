"""Hardware-in-the-loop and fleet simulation: real protocol, many devices, network faults."""
