"""Compositions of the fleet's processes, shared by `fleetroom demo` and `fleetroom loadtest`."""
