"""Generated gRPC code for protos/mcrave/v1 (do not edit; run `python protos/generate.py`)."""
