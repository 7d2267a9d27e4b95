"""One `run`, start to end: the references and the BP baseline queued first, the warm start,
trials until the budget is used, promotion and confirmation of the best, the progress line and
the closing summary."""
