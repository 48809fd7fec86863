"""TorchScript export for Max/MSP's nn~ (what nn~ needs of a .ts: mcrave/export/nn_tilde.py's docstring)."""

from mcrave.export.latent_pca import LatentPCA
from mcrave.export.nn_tilde import export_nn_tilde, script_nn_tilde

__all__ = ["LatentPCA", "export_nn_tilde", "script_nn_tilde"]
