"""Native H2OVL-Mississippi (800M, 2B): the published checkpoints, no remote code."""
