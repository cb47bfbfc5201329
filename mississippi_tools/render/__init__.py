"""Rendering results for people: pictures of what a model wrote."""
