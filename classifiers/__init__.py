"""The routing classifier: query embeddings, scoring heads, training, evaluation, and safe router files.

``hybridgate router train|eval|compare|calibrate`` drives it from the command
line; the gateway loads a saved router through :func:`artifact.load_router` and
scores with it behind the router's ``Scorer`` seam.
"""
