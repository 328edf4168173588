"""Trace-driven evaluation of the device's policy (HEPC) against the policies
runtimes ship (LRU, ARC, priority-LRU) and the offline optimum (Belady).
See docs/evaluation.md."""
