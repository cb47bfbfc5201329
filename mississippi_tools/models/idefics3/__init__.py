"""Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3): published checkpoint, native classes."""
