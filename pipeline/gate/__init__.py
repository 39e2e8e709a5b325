"""One gate: its run, the stage runner, the context stages share, results and the verdict, sync."""
