"""Encoders: the registry and loaders, embedding extraction, and the study-made encoders."""
