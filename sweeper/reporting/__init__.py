"""Reading runs back from MLflow: run selection, curves, tables, figures, the sweep summary and the report CLI."""
