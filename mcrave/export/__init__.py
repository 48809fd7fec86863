"""TorchScript export for Max/MSP's nn~ (see shared docs/nn_tilde_contract.md)."""

from mcrave.export.nn_tilde import export_nn_tilde, script_nn_tilde

__all__ = ["export_nn_tilde", "script_nn_tilde"]
