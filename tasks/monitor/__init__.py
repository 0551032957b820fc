"""Monitor: what the service saw (the request log) and whether the data has drifted from what the model learned."""
