"""Generated gRPC code for protos/ (do not edit; run `python protos/generate.py`)."""
