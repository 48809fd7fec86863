"""Signal processing blocks: PQMF filter banks and channel projections."""

from mcrave.dsp.pqmf import PQMF, design_prototype
from mcrave.dsp.projection import ChannelProjection

__all__ = ["PQMF", "design_prototype", "ChannelProjection"]
