"""The phase-3 step: the routes, eq. 8, the discriminator loss and both Adam updates from one forward pass.

Both networks are updated **simultaneously**, as in the authors' code (one TF op groups the
two Adam updates): the generator's gradient goes through the current discriminator and the
discriminator's through the current SR images. That costs one discriminator pass per step
instead of two and makes resuming exact without any ordering subtleties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from train.losses import (
    TERMS,
    LossWeights,
    adversarial_loss,
    discriminator_loss,
    reconstruction_loss,
    representation_loss,
    score_loss,
)
from train.models.eusr import EUSR
from train.models.nima import ScorePredictor, mean_score
from train.routes import DOWNSCALE_METHODS, ROUTE_SCALES, ROUTES, sr_routes

__all__ = ["PerceptualTrainer", "logs_to_floats"]


class PerceptualTrainer:
    """The phase-3 step: routes, eq. 8, discriminator loss, both Adam updates.

    ``forward(lr, hr)`` gives (generator loss, discriminator loss or None, log tensors);
    ``update`` backpropagates each loss into its own network only and steps both
    optimizers. Terms whose effective weight is 0 are skipped, and so are the networks
    only they need (no discriminator without l_g, no predictor without its terms).
    """

    def __init__(
        self,
        generator: EUSR,
        discriminator: nn.Module | None,
        aesthetic: ScorePredictor | None,
        subjective: ScorePredictor | None,
        weights: LossWeights,
        *,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer | None,
        routes: Sequence[str] = ROUTES,
        downscale: str = "decimate",
        amp: bool = False,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.weights = weights
        self.w = weights.effective()
        self.active = weights.active()
        if not self.active:
            raise ValueError("every loss weight is 0: nothing to train")
        if downscale not in DOWNSCALE_METHODS:
            raise ValueError(f"downscale method {downscale!r}; expected one of {list(DOWNSCALE_METHODS)}")
        bad = [r for r in routes if r not in ROUTES]
        if not routes or bad:
            raise ValueError(f"routes {list(routes)}: expected a non-empty subset of {list(ROUTES)}")
        missing = [s for r in routes for s in ROUTE_SCALES[r] if s not in generator.scales]
        if missing:
            raise ValueError(
                f"routes {list(routes)} need ×{sorted(set(missing))} paths; the generator has {list(generator.scales)}"
            )
        self.use_d = "l_g" in self.active
        self.use_a = any(t in self.active for t in ("l_as", "l_ar"))
        self.use_s = any(t in self.active for t in ("l_ss", "l_sr"))
        for needed, net, what in (
            (self.use_d, discriminator, "discriminator"),
            (self.use_a, aesthetic, "aesthetic predictor"),
            (self.use_s, subjective, "subjective predictor"),
        ):
            if needed and net is None:
                raise ValueError(f"the active loss terms {list(self.active)} need the {what}")
        if self.use_d and opt_d is None:
            raise ValueError("the adversarial term needs a discriminator optimizer")
        self.generator = generator
        self.discriminator = discriminator if self.use_d else None
        self.aesthetic = aesthetic if self.use_a else None
        self.subjective = subjective if self.use_s else None
        self.opt_g = opt_g
        self.opt_d = opt_d if self.use_d else None
        self.routes = tuple(routes)
        self.downscale = downscale
        self.amp = amp
        self.scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
        for p in self._predictors():
            if any(q.requires_grad for q in p.parameters()) or p.training:
                raise ValueError(
                    "score predictors must be frozen (eval mode, requires_grad False): use load_score_predictor(frozen=True)"
                )

    def _predictors(self) -> list[ScorePredictor]:
        return [p for p in (self.aesthetic, self.subjective) if p is not None]

    def _autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.amp)

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        b = lr.shape[0]
        with self._autocast(lr.device):
            srs = sr_routes(self.generator, lr, self.routes, self.downscale)
        for name, sr in srs.items():
            if sr.shape != hr.shape:
                raise ValueError(
                    f"route {name} gives {tuple(sr.shape)}, HR is {tuple(hr.shape)}; HR must be 4× the LR patch"
                )
        names = list(srs)
        per_route: dict[str, list[torch.Tensor]] = {t: [] for t in self.active}
        logs: dict[str, torch.Tensor] = {}
        if "l_r" in self.active:
            per_route["l_r"] = [reconstruction_loss(srs[n], hr) for n in names]
        d_loss = None
        if self.discriminator is not None:
            with self._autocast(lr.device):
                logits = self.discriminator(torch.cat([hr, *(srs[n] for n in names)])).float()
            chunks = logits.split(b)
            logits_hr, logits_sr = chunks[0], chunks[1:]
            per_route["l_g"] = [adversarial_loss(l) for l in logits_sr]  # noqa: E741
            # Not detached: update() backpropagates this loss into the discriminator only.
            d_loss = discriminator_loss(logits_hr, logits_sr)
            logs["loss_d"] = d_loss.detach()
            logs["d_hr"] = torch.sigmoid(logits_hr.detach()).mean()
            probs = [torch.sigmoid(l.detach()).mean() for l in logits_sr]  # noqa: E741
            logs["d_sr"] = torch.stack(probs).mean()
            logs.update({f"d_sr/{n}": p for n, p in zip(names, probs)})
        for tag, net, t_score, t_rep in (("a", self.aesthetic, "l_as", "l_ar"), ("s", self.subjective, "l_ss", "l_sr")):
            if net is None:
                continue
            with torch.no_grad(), self._autocast(lr.device):
                probs_hr, feat_hr = net(hr)
            with self._autocast(lr.device):
                probs_sr, feat_sr = net(torch.cat([srs[n] for n in names]))
            score_hr, score_sr = mean_score(probs_hr.float()), mean_score(probs_sr.float()).split(b)
            feat_hr, feat_sr = feat_hr.float(), feat_sr.float().split(b)
            if t_score in self.active:
                per_route[t_score] = [score_loss(s, score_hr) for s in score_sr]
            if t_rep in self.active:
                per_route[t_rep] = [representation_loss(f, feat_hr) for f in feat_sr]
            logs[f"s_{tag}/hr"] = score_hr.detach().mean()
            logs[f"s_{tag}/sr"] = torch.stack([s.detach().mean() for s in score_sr]).mean()
        g_loss = torch.zeros((), device=lr.device)
        for term in TERMS:
            if term not in self.active:
                continue
            values = per_route[term]
            mean = torch.stack(values).mean()
            g_loss = g_loss + self.w[term] * mean
            logs[term] = mean.detach()
            logs.update({f"{term}/{n}": v.detach() for n, v in zip(names, values)})
        logs["loss_g"] = g_loss.detach()
        return g_loss, d_loss, logs

    def update(self, g_loss: torch.Tensor, d_loss: torch.Tensor | None) -> None:
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)
        # inputs= keeps each loss's gradient in its own network: l_g reaches the generator
        # through D without touching D's weights; the D loss never reaches the generator.
        self.scaler.scale(g_loss).backward(inputs=g_params, retain_graph=d_loss is not None)
        if d_loss is not None:
            d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
            self.scaler.scale(d_loss).backward(inputs=d_params)
        self.scaler.step(self.opt_g)
        if self.opt_d is not None:
            self.scaler.step(self.opt_d)
        self.scaler.update()

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """forward + update; the logged values as floats."""
        g_loss, d_loss, logs = self.forward(lr, hr)
        self.update(g_loss, d_loss)
        return logs_to_floats(logs)


def logs_to_floats(logs: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """One device sync for all logged scalars."""
    keys = list(logs)
    values = torch.stack([logs[k].float().reshape(()) for k in keys]).cpu().tolist() if keys else []
    return dict(zip(keys, values))
