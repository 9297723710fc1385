"""MLflow tracking: the store (``store``), one run (``run``), the metric write path (``writes``, ``mlflow_private``,
``background``), filters and searches (``queries``), who owns a run (``liveness``) and reusing finished runs
(``resume``)."""
