"""Federated learning of the router with Flower: each gateway trains on its own labels, only weights travel.

``defaults`` holds the federation's defaults (one frozen dataclass every path reads), ``apps`` the Flower
ClientApp and ServerApp (Message API), ``strategy`` the server's strategy behind the check of every reply
(``ValidatedStrategy``), ``task`` the local training step and the check of one update, ``partition`` the
benchmark's split of questions over gateways, ``simulation`` the runner that puts many gateways on one machine,
``experiment`` ``fl simulate``'s benchmark table, and ``deploy`` the apps of a real federation.
"""
