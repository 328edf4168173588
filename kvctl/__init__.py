"""kvctl: the KV-CPU reference command-line tool, plus telemetry and
weights (and the device model's stats and blocks)."""
