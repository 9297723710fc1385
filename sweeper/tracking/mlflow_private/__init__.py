"""The one package that uses MLflow internals (private attributes, modules and formats), each verified against
``VERIFIED_MLFLOW`` (pyproject pins ``mlflow<4``): ``sqlite_metrics`` (bulk metric writes and reads on
sqlite) and ``views_format`` (the UI's saved views)."""

VERIFIED_MLFLOW = "3.17.2"
