"""Figures for the write-up, built from the studies in an Optuna storage (never trains).

``python -m reports.build --all`` writes the exercise's figures 1-12 and every study's search
figures as HTML and PNG files plus an ``index.html``. The modules are "computed, then drawn":
``data`` reads trials into plain records, ``exercise``/``faces``/``search_plots`` turn them
into Plotly figures, ``export`` writes the files, ``index`` the page that links them (every
study built into the folder, by this build or an earlier one) and ``commands`` the
``search.run`` command that makes or continues a study. ``compute`` sums the trials' compute
ledgers (best value against cumulative FLOPs and seconds, the grid against the open search)
and ``dashboard`` attaches the figures to their study for optuna-dashboard (``--dashboard``).
"""
