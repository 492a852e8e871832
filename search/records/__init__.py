"""What outlives a run: the ``storage`` (opening, locking, checking), ``liveness`` (owners and
heartbeats), ``interrupts`` (Ctrl-C never cuts a write), ``provenance`` and saved ``weights``."""
