"""The one place that claims trials and runs them: ``runner`` (run_study, the worker processes),
``claims`` (the trial dealer), ``trial`` (an objective as an Optuna trial) and ``seeds`` (a trial
over several seeds)."""
