"""One gate: its run, the stage runner, the context stages share, the verdict, its record in MLflow, sync."""
