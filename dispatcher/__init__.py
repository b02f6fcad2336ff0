"""The control plane: fleet registry, job ledger, matchmaking, recovery, validation and accounting."""
