"""The emulated fleet: parked cars that offer compute, run shards and drive away (see docs/VEHICLES.md)."""
