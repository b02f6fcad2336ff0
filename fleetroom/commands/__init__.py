"""One module per `fleetroom` sub-command, discovered by `fleetroom.cli`."""
