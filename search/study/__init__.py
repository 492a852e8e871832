"""What a study is: its file (``spec``), its sampler and pruner (``components``), the checks
before its first trial (``preflight``) and its dashboard notes (``notes``)."""
