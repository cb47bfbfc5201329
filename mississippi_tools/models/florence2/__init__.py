"""Florence-2 (Microsoft's remote-code layout, e.g. HuggingFaceM4/Florence-2-DocVQA)."""
