"""One configuration dataclass for a model and its training recipe, with named presets.

A checkpoint stores the full config, so a model is always rebuilt from the file, never from flags
(github.com/acids-ircam/RAVE issues 273 and 275: the channel count was lost between training and export).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

WEIGHT_PRECISIONS = ("float32", "bf16", "int8")  # conv weights, engine and nn~ export alike
# streaming engine runtimes (mcrave/runtime.py) and the conv weight precision each runs; the
# float32 ones equal the offline model, the others are opt-in, close but not equal (tests hold
# their bounds), and read fewer bytes per step
RUNTIME_PRECISION = {
    "eager": "float32",
    "torchscript": "float32",
    "torchscript-bf16": "bf16",
    "torchscript-int8": "int8",
}
RUNTIMES = tuple(RUNTIME_PRECISION)
FLOAT32_RUNTIMES = tuple(r for r, p in RUNTIME_PRECISION.items() if p == "float32")
REDUCED_PRECISION_RUNTIMES = tuple(r for r, p in RUNTIME_PRECISION.items() if p != "float32")
DEFAULT_RUNTIME = "torchscript"  # bench/model_bench.py measures them all

PROJECTIONS = ("identity", "ms", "dct", "learned")


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (RAVE v2 defaults, arXiv:2111.05011, scaled to the preset)."""

    batch_size: int = 8
    crop_frames: int = 131072  # samples per training crop (all channels share the crop)
    phase1_steps: int = 1_000_000  # representation phase; adversarial phase follows
    max_steps: int = 2_000_000
    lr: float = 1e-3  # generator Adam, decays linearly to lr_end over phase 1
    lr_end: float = 1e-4
    d_lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    kl_beta_start: float = 1e-6  # beta rises log-linearly to kl_beta_max over kl_warmup_steps
    kl_beta_max: float = 0.05
    kl_warmup_steps: int = 20_000
    # random channel masking: probabilities of the three mask kinds (>= 1 channel always present)
    mask_p_all: float = 0.3
    mask_p_single: float = 0.35
    mask_p_subset: float = 0.35
    interchannel_weight: float = 1.0
    # spatial stage losses on the missing channels (spectral + ILD/ICC against the present ones)
    spatial_weight: float = 1.0
    # weight of the side-level term among them: image width against fidelity to the present
    # channel's fine structure (mss), which decorrelation costs
    side_weight: float = 1.0
    # STFT size of the spatial stage's ILD/ICC term (4096 = the ~93 ms frames `mcrave eval` uses)
    spatial_cue_fft: int = 1024
    # False trains the spatial stage alone on top of a warm-started, frozen codec
    train_codec: bool = True
    # share of masked rows whose encoder sees ALL channels while the spatial stage still gets only
    # the masked ones: the "coded" case (latents of everything travel, the audio of some), so the
    # encoder learns to carry spatial cues for the stage
    coded_p: float = 0.0
    feature_matching_weight: float = 20.0
    d_every: int = 4  # phase 2: one discriminator step every d_every batches
    grad_clip: float = 10.0
    disc_capacity: int = 16
    checkpoint_every: int = 1000
    keep_last: int = 3
    validate_every: int = 1000
    num_workers: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an N-channel masked RAVE-style VAE.

    The encoder sees raw present channels (plus the presence mask); the decoder predicts all N
    channels in the `projection` domain and inverts it, so a mask always means "this raw channel".
    """

    channels: int = 2
    sample_rate: int = 44100
    channel_names: tuple[str, ...] = ()
    projection: str = "identity"
    bands: int = 16
    pqmf_taps: int = 256  # prototype length; 512 matches RAVE's 100 dB bank
    capacity: int = 96
    multipliers: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (4, 4, 4, 2)
    dilations: tuple[int, ...] = (1, 3, 9)
    kernel_size: int = 3
    latent_size: int = 128
    noise: bool = True
    # spatial stage (mcrave.model.spatial): missing channels built from the present ones in a
    # causal STFT; off for models trained before it existed, on in every preset
    spatial: bool = False
    # the last `cue_latents` latent dims also carry a learned map of the present channels' band
    # levels (mcrave.model.cues): side information for the spatial stage; 0 = off
    cue_latents: int = 0
    spatial_fft: int = 1024
    spatial_hop: int = 256
    spatial_bands: int = 32
    spatial_hidden: int = 64
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.projection == "ms" and self.channels != 2:
            raise ValueError("mid/side projection needs exactly 2 channels")
        if len(self.multipliers) != len(self.strides) + 1:
            raise ValueError("multipliers must have one more entry than strides")
        if self.bands & (self.bands - 1) or any(s & (s - 1) for s in self.strides):
            raise ValueError(
                "bands and strides must be powers of two (nn~ needs a power-of-two ratio)"
            )
        if self.channel_names and len(self.channel_names) != self.channels:
            raise ValueError("channel_names must name every channel")
        if not 0 <= self.cue_latents <= self.latent_size:
            raise ValueError(f"cue_latents must be in 0..latent_size, got {self.cue_latents}")
        if self.spatial and (self.ratio % self.spatial_hop or self.spatial_fft % self.spatial_hop):
            raise ValueError("spatial_hop must divide both the model ratio and spatial_fft")

    @property
    def ratio(self) -> int:
        """Audio samples per latent frame."""
        r = self.bands
        for s in self.strides:
            r *= s
        return r

    @property
    def names(self) -> tuple[str, ...]:
        """Channel labels, defaulting to L/R for stereo and ch0..chN-1 otherwise."""
        if self.channel_names:
            return self.channel_names
        if self.channels == 2:
            return ("L", "R")
        return tuple(f"ch{i}" for i in range(self.channels))


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(
            model=_build(ModelConfig, data["model"]), train=_build(TrainConfig, data["train"])
        )


def _build(kind: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
    # JSON turns tuples into lists; restore them so configs compare equal after a round trip
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


_PRESETS: dict[str, Config] = {
    # trains in seconds: tiny widths, ratio 256
    "test": Config(
        ModelConfig(
            bands=8,
            pqmf_taps=64,
            capacity=8,
            multipliers=(1, 2, 2, 4),
            strides=(4, 4, 2),
            dilations=(1, 3),
            latent_size=8,
            spatial=True,
            cue_latents=4,
            spatial_fft=512,
            spatial_hop=128,
            spatial_bands=16,
            spatial_hidden=16,
            preset="test",
        ),
        TrainConfig(
            batch_size=4,
            crop_frames=8192,
            phase1_steps=150,
            max_steps=300,
            kl_warmup_steps=100,
            checkpoint_every=50,
            keep_last=2,
            validate_every=100,
            disc_capacity=4,
        ),
    ),
    # useful after ~100 min on 2 CPU cores; ratio 1024
    "cpu-small": Config(
        ModelConfig(
            bands=16,
            pqmf_taps=256,
            capacity=32,
            multipliers=(1, 2, 4, 4),
            strides=(4, 4, 4),
            dilations=(1, 3, 9),
            latent_size=32,
            spatial=True,
            cue_latents=16,
            preset="cpu-small",
        ),
        # ~0.4 s/step on one thread with three runs sharing 2 cores: 13k steps fit 100 min;
        # the adversarial phase is the last ~quarter (best.ckpt keeps the best validation)
        TrainConfig(
            batch_size=4,
            crop_frames=16384,
            phase1_steps=10000,
            max_steps=13000,
            # 0.01 collapsed the posterior (KL -> 0) within 2000 steps: a short run needs a
            # nearly deterministic bottleneck to learn to use its latents at all
            kl_beta_max=1e-4,
            kl_warmup_steps=5000,
            checkpoint_every=500,
            keep_last=3,
            validate_every=500,
            disc_capacity=8,
        ),
    ),
    # RAVE v2 sizes: 16 bands, strides 4,4,4,2 (ratio 2048), latent 128, capacity 96
    "v2": Config(
        ModelConfig(
            bands=16,
            pqmf_taps=512,
            capacity=96,
            multipliers=(1, 2, 4, 8, 16),
            strides=(4, 4, 4, 2),
            dilations=(1, 3, 9),
            latent_size=128,
            spatial=True,
            cue_latents=32,
            preset="v2",
        ),
        TrainConfig(),
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def preset(
    name: str,
    *,
    channels: int = 2,
    projection: str = "identity",
    sample_rate: int = 44100,
    channel_names: tuple[str, ...] = (),
) -> Config:
    """A named config specialised to a channel count, projection and rate."""
    if name not in _PRESETS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    base = _PRESETS[name]
    model = dataclasses.replace(
        base.model,
        channels=channels,
        projection=projection,
        sample_rate=sample_rate,
        channel_names=tuple(channel_names),
    )
    return Config(model=model, train=base.train)


def _coerce(old: object, text: str) -> object:
    if isinstance(old, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(old, tuple):
        return tuple(type(old[0])(v) if old else v for v in text.split(",") if v)
    return type(old)(text)


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    """Apply `section.key=value` overrides, typed like the field they replace (ValueError naming
    the item otherwise): `mcrave train --set`, and the trainer service checking a job's
    overrides against this schema before it launches anything."""
    sections = {"model": cfg.model, "train": cfg.train}
    for item in items:
        key, sep, text = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in sections or not hasattr(sections[section], name):
            raise ValueError(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE")
        old = getattr(sections[section], name)
        try:
            sections[section] = dataclasses.replace(sections[section], **{name: _coerce(old, text)})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--set {item!r}: {exc}") from exc
    return Config(model=sections["model"], train=sections["train"])
