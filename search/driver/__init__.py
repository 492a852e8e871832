"""The one place that claims trials: ``runner`` (run_study, ``--jobs 1`` in its own process),
``work`` (what the driver shares with its backends: the run's work, dealing within a budget, the
progress bar, a claimed trial run to its end), ``claims`` (the trial dealer), ``trial`` (an
objective as an Optuna trial) and ``seeds`` (a trial over several seeds)."""
