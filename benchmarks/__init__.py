"""Performance suite: mississippi-tools measured against the machine's limits and the plain path.

Run ``python -m benchmarks`` (or ``mississippi-tools bench``); see ``benchmarks/README.md``.
"""
