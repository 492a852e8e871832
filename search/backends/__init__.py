"""Where dealt trials train besides the driver's own process: ``processes`` (``--jobs K`` worker
processes), ``lanes`` (many small trials as one batched model) and Ray Tune (``ray_tune``, its
driver-side ``ray_searcher`` and the ``ray_worker`` trainable)."""
