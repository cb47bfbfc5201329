"""Idefics2 (HuggingFaceM4/idefics2-8b, -chatty, -base, -AWQ) on transformers' native classes."""
