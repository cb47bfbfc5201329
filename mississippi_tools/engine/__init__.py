"""Engines: who runs the model (in this process, or a remote OpenAI-compatible service)."""
