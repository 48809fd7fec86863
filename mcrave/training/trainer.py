"""The two-phase masked training loop (RAVE recipe, N channels, data-parallel, exactly resumable).

Phase 1 (step < phase1_steps): spectral + inter-channel reconstruction + beta*KL on random channel
masks. Phase 2: the encoder is frozen (its output detached), the discriminator trains on one batch
in `d_every`, the generator on the others with the reconstruction, hinge and feature-matching
losses. Every random draw of a step (masks, latent noise, decoder noise seeds) comes from a
generator seeded by (seed, step) over the *global* batch, so a resumed run and a data-parallel
run reproduce a plain run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcrave.config import Config
from mcrave.export.latent_pca import LatentPCA
from mcrave.model import MCRave
from mcrave.training import schedules
from mcrave.training.checkpoints import RunCheckpoints, restore_rng_state, rng_state
from mcrave.training.data import BatchPlan, CropSource, mix_seed
from mcrave.training.discriminator import Discriminator, discriminator_loss, generator_losses
from mcrave.training.distributed import DistInfo, agree, average_gradients
from mcrave.training.losses import band_level_loss, interchannel_loss, spectral_distance
from mcrave.training.masking import random_masks
from mcrave.training.monitor import Monitor

VALID_CROPS = 8


@dataclass(frozen=True)
class RunOptions:
    run_dir: Path
    max_steps: int
    seed: int = 0
    metrics_port: int | None = None
    log_every: int = 10
    metrics_linger: float = 0.0  # seconds the metrics stay served after the run ends
    # fault injection for tests, set by `mcrave train` from MCRAVE_FAULT: "sigterm_at:STEP[@RANK]"
    # makes that rank signal itself after STEP; `before_rename` runs inside checkpoint writes
    sigterm_at: str = ""
    before_rename: Callable[[], None] | None = None


class Trainer:
    def __init__(
        self,
        cfg: Config,
        train: CropSource,
        valid: CropSource | None,
        opts: RunOptions,
        info: DistInfo,
        device: torch.device,
    ) -> None:
        self.cfg, self.tc, self.opts, self.info, self.device = cfg, cfg.train, opts, info, device
        torch.manual_seed(mix_seed(opts.seed, 0x1417))  # same initial weights on every rank
        self.model = MCRave(cfg.model).to(device)
        self.disc = Discriminator(cfg.model.channels, self.tc.disc_capacity).to(device)
        # fused Adam: one kernel over all parameters instead of ~8 ops per tensor (v2, 211
        # tensors, 35 M weights on 2 CPU threads: 26 ms a step instead of 80 ms)
        self.opt_g = torch.optim.Adam(
            self.model.parameters(), lr=self.tc.lr, betas=self.tc.betas, fused=True
        )
        self.opt_d = torch.optim.Adam(
            self.disc.parameters(), lr=self.tc.d_lr, betas=self.tc.betas, fused=True
        )
        self.plan = BatchPlan(train, self.tc.batch_size, opts.seed, info)
        self.valid = valid
        self.step = 0
        self.best_valid: float | None = None
        self.latent_pca: dict[str, Any] | None = None  # fitted at each validation
        self.checkpoints = RunCheckpoints(opts.run_dir, self.tc.keep_last, opts.before_rename)
        self._stop_signal: str | None = None

    # ---- state -------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        return {
            "phase": 2 if schedules.is_adversarial(self.step, self.tc) else 1,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "discriminator": {k: v.detach().cpu() for k, v in self.disc.state_dict().items()},
            "data_order": self.plan.state(),
            "rng": rng_state(),
            "best_valid": self.best_valid,
        }

    def resume(self, payload: dict[str, Any]) -> None:
        """Continue from a loaded checkpoint of this trainer (weights, optimisers, data order)."""
        if Config.from_dict(payload["config"]).model != self.cfg.model:
            raise ValueError("the checkpoint's model config differs from this run's")
        extra = payload["extra"]
        self.plan.check_state(extra["data_order"])
        self.model.load_state_dict(payload["model_state"])
        self.disc.load_state_dict(extra["discriminator"])
        self.opt_g.load_state_dict(extra["opt_g"])
        self.opt_d.load_state_dict(extra["opt_d"])
        restore_rng_state(extra["rng"])
        self.step = int(payload["step"])
        self.best_valid = extra["best_valid"]
        self.latent_pca = payload.get("latent_pca")

    def warm_start(self, payload: dict[str, Any]) -> tuple[int, int]:
        """Copy every weight of another model's checkpoint whose name and shape match (a model
        for another channel count shares all but its first and last convs); returns
        (copied, total). Optimisers, step and data order start fresh: this is not a resume."""
        own = self.model.state_dict()
        matching = {
            k: v for k, v in payload["model_state"].items() if k in own and own[k].shape == v.shape
        }
        self.model.load_state_dict(matching, strict=False)
        return len(matching), len(own)

    # ---- one step ----------------------------------------------------------------------------
    def _aligned(
        self, target: torch.Tensor, out: torch.Tensor, lat: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and output cut to the same samples (the output lags by `lat`, default the
        generative decoder's), a multiple of the PQMF band count long. Every loss and the
        discriminator see only these, so a delayed output or its warm-up samples are never
        mistaken for an error or a tell."""
        lat = self.model.decoded_latency if lat is None else lat
        bands = self.cfg.model.bands
        usable = (target.shape[-1] - lat) // bands * bands
        return target[..., :usable], out[..., lat : lat + usable]

    def _spatial_losses(
        self, audio: torch.Tensor, out: torch.Tensor, masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Losses of the spatial stage's output: spectral distance of every channel (present
        ones pass through, so only missing ones cost anything), band levels of each channel's
        difference to the mean present channel (the "side" signal: it sets the image width,
        which the other terms let collapse) and ILD/ICC errors over every channel pair. Means
        over all rows and channels, so data-parallel ranks average to the global batch."""
        x, y = self._aligned(audio, out, self.model.latency)
        weights = masks.to(x.dtype)[:, :, None]
        reference = (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        return {
            "spatial_spectral": spectral_distance(x, y),
            "spatial_side": band_level_loss(
                x - reference, y - reference, self.cfg.model.sample_rate
            ),
            "spatial_interchannel": interchannel_loss(
                x, y, self.cfg.model.sample_rate, n_fft=self.tc.spatial_cue_fft
            ),
        }

    def _spatial_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.tc.spatial_weight * (
            losses["spatial_spectral"]
            + self.tc.side_weight * losses["spatial_side"]
            + self.tc.interchannel_weight * losses["spatial_interchannel"]
        )

    def _reconstruction(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses on *all* channels of aligned input `x` and output `y`."""
        pqmf = self.model.pqmf
        losses = {
            "spectral": spectral_distance(x, y),
            "multiband": spectral_distance(pqmf.analysis(x), pqmf.analysis(y), groups=x.shape[1]),
            "interchannel": interchannel_loss(x, y, self.cfg.model.sample_rate),
        }
        if self.cfg.model.projection != "identity":
            q = self.model.projection.matrix().detach()
            project = lambda s: torch.einsum("ij,bjt->bit", q, s)  # noqa: E731
            losses["projected"] = spectral_distance(project(x), project(y))
        return losses

    def _draws(self, step: int, frames: int) -> tuple[torch.Tensor, ...]:
        """Masks, encoder masks (all channels on "coded" rows), latent noise and decoder seeds of
        this rank's rows of global batch `step`."""
        gen = torch.Generator().manual_seed(mix_seed(self.opts.seed, step))
        g, rows = self.plan.global_batch, self.info.shard(self.tc.batch_size)
        masks = random_masks(g, self.cfg.model.channels, self.tc, gen)
        noise = torch.randn(g, self.cfg.model.latent_size, frames, generator=gen)[rows]
        seeds = torch.randint(0, 2**31 - 1, (g,), generator=gen)[rows]
        coded = torch.rand(g, generator=gen) < self.tc.coded_p
        encoder_masks = masks | coded[:, None]
        return tuple(t.to(self.device) for t in (masks[rows], encoder_masks[rows], noise, seeds))

    def _freeze_codec(self) -> None:
        """Only the spatial stage learns (on top of a warm-started codec)."""
        self.model.requires_grad_(False)
        if self.model.decoder.spatial is None:
            raise ValueError("train_codec=False needs a model with a spatial stage")
        self.model.decoder.spatial.requires_grad_(True)

    def _spatial_step(
        self,
        step: int,
        audio: torch.Tensor,
        masks: torch.Tensor,
        encoder_masks: torch.Tensor,
        noise: torch.Tensor,
        seeds: torch.Tensor,
    ) -> dict[str, float]:
        """A step of the spatial stage alone: the frozen codec runs without gradients."""
        self._freeze_codec()
        with torch.no_grad():
            mean, scale = self.model.encode(audio, encoder_masks)
            z, _ = self.model.reparametrize(mean, scale, noise)
        out, _ = self.model.decode_parts(z, seeds, audio, masks)
        losses = self._spatial_losses(audio, out, masks)
        total = self._spatial_total(losses)
        self._update(self.opt_g, self.model, total, schedules.generator_lr(step, self.tc))
        return {"loss": total.item(), **{k: v.item() for k, v in losses.items()}}

    def train_step(self, step: int) -> dict[str, float]:
        tc = self.tc
        audio = self.plan.audio(step).to(self.device)
        masks, encoder_masks, noise, seeds = self._draws(step, audio.shape[-1] // self.model.ratio)
        if not tc.train_codec:
            return self._spatial_step(step, audio, masks, encoder_masks, noise, seeds)
        adversarial = schedules.is_adversarial(step, tc)
        self.model.requires_grad_(True)
        self.model.encoder.requires_grad_(not adversarial)
        with torch.set_grad_enabled(not adversarial):
            mean, scale = self.model.encode(audio, encoder_masks)
            # our noise: drawn per global row, so ranks match one process
            z, kl = self.model.reparametrize(mean, scale, noise)
        if schedules.is_discriminator_step(step, tc):
            with torch.no_grad():
                real, fake = self._aligned(audio, self.model.decode_latent(z, seeds))
            self.disc.requires_grad_(True)
            loss_d = discriminator_loss(self.disc(real), self.disc(fake))
            self._update(self.opt_d, self.disc, loss_d, tc.d_lr)
            return {"discriminator": loss_d.item()}
        spatial_out, decoded = self.model.decode_parts(z, seeds, audio, masks)
        real, out = self._aligned(audio, decoded)
        losses = self._reconstruction(real, out)
        total = losses["spectral"] + losses["multiband"] + losses.get("projected", 0.0)
        total = total + tc.interchannel_weight * losses["interchannel"]
        if self.model.decoder.spatial is not None:
            losses |= self._spatial_losses(audio, spatial_out, masks)
            total = total + self._spatial_total(losses)
        if adversarial:
            self.disc.requires_grad_(False)
            with torch.no_grad():
                real_features = self.disc(real)
            adv, fm = generator_losses(real_features, self.disc(out))
            losses |= {"adversarial": adv, "feature_matching": fm}
            total = total + adv + tc.feature_matching_weight * fm
        else:
            losses["kl"] = kl.mean()
            total = total + schedules.kl_beta(step, tc) * losses["kl"]
        self._update(self.opt_g, self.model, total, schedules.generator_lr(step, tc))
        return {"loss": total.item(), **{k: v.item() for k, v in losses.items()}}

    def _update(
        self, opt: torch.optim.Optimizer, module: torch.nn.Module, loss: torch.Tensor, lr: float
    ) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in module.parameters() if p.requires_grad]
        average_gradients(params, self.info)
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.tc.grad_clip)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()

    # ---- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean score on fixed valid crops: the codec with all channels present, then (spatial
        stage) the missing channels' losses with each channel alone."""
        if self.valid is None or len(self.valid) == 0:
            return None
        self.model.eval()
        audio = torch.stack(
            [
                torch.from_numpy(self.valid.crop(0, i))
                for i in range(min(VALID_CROPS, len(self.valid)))
            ]
        ).to(self.device)
        n = self.cfg.model.channels
        masks = [torch.ones(n, dtype=torch.bool)] + (
            [torch.eye(n, dtype=torch.bool)[c] for c in range(n)] if n > 1 else []
        )
        scores = []
        for mask in masks:
            m = mask.to(self.device).expand(audio.shape[0], n)
            mean, _ = self.model.encode(audio, m)
            if bool(m.all()):  # the latents nn~ users see: ranked by variance in the export
                self.latent_pca = LatentPCA.fit(mean).to_dict()
            if bool(m.all()) or self.model.decoder.spatial is None:
                # the codec's own reconstruction (the stage would only pass the input through)
                x, y = self._aligned(audio, self.model.decode_latent(mean))
                scores.append(self._reconstruction(x, y)["spectral"].item())
            else:  # the missing channels as the spatial stage infers them
                spatial, _ = self.model.decode_parts(mean, 0, audio, m)
                losses = self._spatial_losses(audio, spatial, m)
                scores.append(sum(v.item() for v in losses.values()))
        self.model.train()
        return sum(scores) / len(scores)

    # ---- loop --------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop_signal = signal.Signals(signum).name

    def _fault(self) -> None:
        if not self.opts.sigterm_at:
            return
        step, _, rank = self.opts.sigterm_at.partition("@")
        if int(step) == self.step and (not rank or int(rank) == self.info.rank):
            os.kill(os.getpid(), signal.SIGTERM)

    def _save(self, monitor: Monitor | None) -> Path | None:
        if not self.info.is_main:
            return None
        path = self.checkpoints.save(
            self.model, self.cfg, self.step, self.training_state(), self.latent_pca
        )
        if monitor:
            monitor.event("checkpoint", step=self.step, path=str(path))
        return path

    def fit(self) -> str:
        """Train to max_steps or until a signal; returns "done", the signal's name or "diverged"."""
        tc, opts = self.tc, self.opts
        monitor = (
            Monitor(opts.run_dir, self.step, opts.max_steps, opts.metrics_port, opts.metrics_linger)
            if self.info.is_main
            else None
        )
        audio_per_step = self.plan.global_batch * tc.crop_frames / self.cfg.model.sample_rate
        if monitor:
            monitor.event(
                "start",
                step=self.step,
                max_steps=opts.max_steps,
                world=self.info.world,
                pid=os.getpid(),
                metrics_port=monitor.metrics_port,
                audio_seconds_per_step=audio_per_step,
            )
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.model.train()
        outcome, saved_at, started, timed = "done", -1, time.perf_counter(), 0
        try:
            while self.step < opts.max_steps:
                t0 = time.perf_counter()
                losses = self.train_step(self.step)
                self.step += 1
                self._fault()
                # one all_reduce: losses for the log, and the stop flag so every rank stops together
                values = agree(
                    torch.tensor(
                        [float(self._stop_signal is not None), *losses.values()],
                        dtype=torch.float64,
                        device=self.device,  # nccl reduces CUDA tensors only
                    ),
                    self.info,
                )
                losses = dict(zip(losses, (values[1:] / self.info.world).tolist(), strict=True))
                seconds = time.perf_counter() - t0
                timed += 1
                if monitor:
                    write = self.step % opts.log_every == 0 or self.step == opts.max_steps
                    monitor.step(
                        self.step,
                        losses,
                        seconds,
                        audio_per_step,
                        (time.perf_counter() - started) / timed,
                        write,
                    )
                if self.step % tc.validate_every == 0 and self.info.is_main:
                    self._validate_and_save(monitor)
                    saved_at = self.step
                elif self.step % tc.checkpoint_every == 0:
                    self._save(monitor)
                    saved_at = self.step
                if not torch.isfinite(values).all():
                    # keep the last good checkpoint; a watcher sees the error event
                    if monitor:
                        monitor.event(
                            "error",
                            step=self.step,
                            losses=losses,
                            message="non-finite loss: training diverged",
                        )
                    return "diverged"
                if values[0] > 0:
                    outcome = self._stop_signal or "peer-signal"
                    break
            if saved_at != self.step:
                self._save(monitor)
            if monitor:
                monitor.event(
                    "stop" if outcome != "done" else "done", step=self.step, reason=outcome
                )
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if monitor:
                monitor.close()
        return outcome

    def _validate_and_save(self, monitor: Monitor | None) -> None:
        score = self.validate()
        improved = score is not None and (self.best_valid is None or score < self.best_valid)
        if improved:
            self.best_valid = score
        path = self._save(monitor)
        if improved and path is not None:
            self.checkpoints.mark_best(path)
        if monitor and score is not None:
            monitor.event("validation", step=self.step, spectral=score, best=improved)
