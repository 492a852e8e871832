"""Where dealt trials train besides one worker process per trial: ``lanes`` (many small trials
as one batched model) and Ray Tune (``ray_tune``, its driver-side ``ray_searcher`` and the
``ray_worker`` trainable)."""
