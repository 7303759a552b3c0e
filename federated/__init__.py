"""Federated learning of the router: built in a later issue."""
