"""Federated learning of the router with Flower: each gateway trains on its own labels, only weights travel.

``apps`` holds the Flower ClientApp and ServerApp (Message API), ``task`` the
local training step and the server's check of each update, ``partition`` the
benchmark's split of questions over gateways, and ``simulation`` the runner
that puts many gateways on one machine.
"""
