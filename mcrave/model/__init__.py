"""The N-channel masked RAVE-style VAE and its layers."""

from mcrave.model.vae import MCRave

__all__ = ["MCRave"]
