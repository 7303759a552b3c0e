"""Where answers come from: the in-process model and remote OpenAI-compatible or litellm backends."""

import os

# litellm downloads its price list at import unless told to use the copy it ships;
# a gateway on a device must start offline and without a network round trip.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
