"""The dispatcher's ledger: every SQL statement of the dispatcher lives in this package, behind `Ledger`."""

from __future__ import annotations

from dispatcher.ledger.store import Ledger

__all__ = ["Ledger"]
