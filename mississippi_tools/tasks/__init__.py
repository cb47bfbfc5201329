"""Agent tasks: prompts, result types and output parsing (engine-independent)."""
