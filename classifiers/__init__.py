"""Routing classifiers (embeddings + heads): built in a later issue."""
