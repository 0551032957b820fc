"""The BentoML prediction service and its request handling."""
