"""`python -m fleetroom`."""

from __future__ import annotations

import sys

from fleetroom.cli import main

sys.exit(main())
