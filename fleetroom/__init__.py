"""The fleetroom command line: composes the broker, fleet, dispatcher and control room."""
