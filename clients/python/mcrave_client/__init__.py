"""Torch-free client SDK for mcrave's encoder, decoder and trainer services."""
