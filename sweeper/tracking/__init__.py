"""MLflow tracking: the store (``store``), one run (``run``), the metric write path (``writes``, ``sqlite_bulk``,
``background``), who owns a run (``liveness``) and reusing finished runs (``resume``)."""
