"""The training losses: L = l_rec*rec + entropy_weight*H(w) + l_adv*adv + l_ali*align (+ D's loss)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from train.pixel.config import ModelConfig
from train.pixel.model import ModelOutput


def generator_loss(output: ModelOutput, config: ModelConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of everything but the discriminator, and its terms (for the progress bar)."""
    rec = F.mse_loss(output.reconstruction, output.normalised)
    total = config.l_rec * rec
    terms = {"rec": rec.item()}
    if output.entropy is not None and config.entropy_weight > 0:
        total = total + config.entropy_weight * output.entropy
        terms["ent"] = output.entropy.item()
    if output.fake_logit is not None:
        # Non-saturating GAN loss: the reconstruction should look real to D.
        adv = F.binary_cross_entropy_with_logits(output.fake_logit, torch.ones_like(output.fake_logit))
        ali = F.mse_loss(output.fake_features, output.real_features.detach())
        total = total + config.l_adv * adv + config.l_ali * ali
        terms.update(adv=adv.item(), ali=ali.item())
    terms["loss"] = total.item()
    return total, terms


def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """D learns to tell the input (real) from its reconstruction (fake)."""
    real = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
    fake = F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    return real + fake
