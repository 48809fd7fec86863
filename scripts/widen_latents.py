"""Give a trained model dedicated cue latents: `python scripts/widen_latents.py OLD.ckpt NEW.ckpt
--cue-latents 16` appends 16 latent dims that the encoder's band-level cue branch writes.

The codec is kept, not relearned (`mcrave train --init-from` would re-initialise every tensor
whose shape changed): the old latent dims and the generative decoder's output are exactly what
they were (the decoder's new input columns start at zero). The spatial stage restarts at copy
(gains, phases, nearly shut decoder gate) plus the level differences the cue latents carry,
because since v4 its gains alone set the level (before, the decoder residual had carried most
of it). The demo models v4 were made so (models/README.md); tests/test_core_model.py checks it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from mcrave.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mcrave.config import Config
from mcrave.model import MCRave
from mcrave.model.spatial import INITIAL_GATE

ENCODER_OUT = "encoder.out.conv."
DECODER_IN = "decoder.inp.conv.parametrizations.weight.original1"
STAGE_LATENT = "decoder.spatial.latent.weight"
STAGE = "decoder.spatial."  # pair_out: log gains first; target_out: coherence, then gate


def widen(old: MCRave, cue_latents: int) -> MCRave:
    cfg = old.cfg
    if cfg.cue_latents:
        raise ValueError("the model already has cue latents")
    d = cfg.latent_size
    wide = MCRave(dataclasses.replace(cfg, latent_size=d + cue_latents, cue_latents=cue_latents))
    before, state = old.state_dict(), wide.state_dict()
    for name, value in before.items():
        if state[name].shape == value.shape:
            state[name] = value.clone()
    # the old mean and scale rows move to their new places; the new mean rows start as the cues
    # alone (Encoder's init: gain 0), the new scale rows at a constant (gain 0, initial bias)
    for part in ("bias", "parametrizations.weight.original0", "parametrizations.weight.original1"):
        old_t, new_t = before[ENCODER_OUT + part], state[ENCODER_OUT + part]
        new_t[:d], new_t[d + cue_latents : 2 * d + cue_latents] = old_t[:d], old_t[d:]
    state[ENCODER_OUT + "parametrizations.weight.original0"][2 * d + cue_latents :] = 0.0
    state[DECODER_IN][:, :d] = before[DECODER_IN]
    state[DECODER_IN][:, d:] = 0.0  # zero columns leave each row's norm (and output) unchanged
    if STAGE_LATENT in state:
        state[STAGE_LATENT][:, :d] = before[STAGE_LATENT]
        state[STAGE_LATENT][:, d:] = 0.0
    if f"{STAGE}pair_out.weight" in state:
        # since v4 the gains alone set the level and the mix only the texture: restart the
        # transform heads at copy and the decoder residual nearly shut (it had carried the level)
        bands = wide.decoder.spatial.used_bands
        for name in ("pair_out.weight", "pair_out.bias"):
            state[f"{STAGE}{name}"][:] = 0.0
        state[f"{STAGE}target_out.weight"][bands:] = 0.0
        state[f"{STAGE}target_out.bias"][bands:] = INITIAL_GATE
    wide.load_state_dict(state)
    return wide


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="checkpoint without cue latents")
    p.add_argument("output", help="new checkpoint")
    p.add_argument("--cue-latents", type=int, default=16)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    payload = load_checkpoint(args.source)
    wide = widen(model_from_checkpoint(payload), args.cue_latents)
    config = Config.from_dict(payload["config"])
    config = dataclasses.replace(config, model=wide.cfg)
    save_checkpoint(args.output, wide, config=config)
    print(f"{args.output}: latent {wide.cfg.latent_size} ({args.cue_latents} cue dims)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
