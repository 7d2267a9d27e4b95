"""The Optuna side: CLI, studies, the trial objective, export of winners."""
