"""Search: run the course's experiments as Optuna studies.

The folders follow a study's flow: a study file (``study/``: its spec, sampler and pruner,
pre-run checks, notes) goes to the driver (``driver/``: ``run_study``, the one trial dealer,
the worker processes, a trial over seeds), which hands trials to a backend (``backends/``:
packs of lanes, Ray Tune) that runs the objective; ``records/`` holds what outlives a run (the
storage and its lock, liveness, interrupts, provenance, weights). The command-line entry
points sit at the top: ``run``, ``confirm``, ``export``, ``retrain`` and ``dashboard``.
"""
