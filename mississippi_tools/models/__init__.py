"""Model families (backends) and how checkpoints are found and loaded."""
