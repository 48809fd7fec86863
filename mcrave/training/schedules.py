"""Step-indexed schedules (KL warm-up, generator learning rate, phase switch).

Every schedule is a pure function of the step, so a resumed run needs no scheduler state to land
on exactly the same values as an uninterrupted one.
"""

from __future__ import annotations

import math

from mcrave.config import TrainConfig


def kl_beta(step: int, cfg: TrainConfig) -> float:
    """KL weight rising log-linearly from kl_beta_start to kl_beta_max over kl_warmup_steps."""
    if cfg.kl_warmup_steps <= 0 or step >= cfg.kl_warmup_steps:
        return cfg.kl_beta_max
    t = step / cfg.kl_warmup_steps
    lo, hi = math.log(cfg.kl_beta_start), math.log(cfg.kl_beta_max)
    return math.exp(lo + t * (hi - lo))


def generator_lr(step: int, cfg: TrainConfig) -> float:
    """G learning rate: linear decay lr -> lr_end over phase 1, then held at lr_end."""
    if cfg.phase1_steps <= 0 or step >= cfg.phase1_steps:
        return cfg.lr_end
    t = step / cfg.phase1_steps
    return cfg.lr + t * (cfg.lr_end - cfg.lr)


def is_adversarial(step: int, cfg: TrainConfig) -> bool:
    """Phase 2 (GAN on, encoder frozen) starts at step phase1_steps."""
    return step >= cfg.phase1_steps


def is_discriminator_step(step: int, cfg: TrainConfig) -> bool:
    """In phase 2 one batch in d_every trains D; the others train G (RAVE's alternation)."""
    return is_adversarial(step, cfg) and (step - cfg.phase1_steps) % cfg.d_every == 0
