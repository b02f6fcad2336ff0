"""fleetroom part."""
