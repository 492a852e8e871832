"""Search: study files, the Optuna runner, backends, export, retrain and the dashboard."""
