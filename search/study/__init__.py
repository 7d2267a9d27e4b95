"""A study and those who share it: what it is asked (``settings``), where it is kept
(``storage``), the sampler and pruner, the workers that share one storage, the trial budget
they share, and stopping on a signal."""
