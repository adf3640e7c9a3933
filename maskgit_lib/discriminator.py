"""Optional adversarial loss for VQGAN training: PatchGAN discriminator and hinge losses.

VQGAN (Esser et al. 2021) adds a patch-based discriminator to the
reconstruction loss so decoded images are sharp rather than blurry averages.
Its weight is set adaptively (taming-transformers):

    lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + 1e-4)

where ``G_L`` is the decoder's last layer, so the GAN gradient never swamps the
reconstruction gradient. The discriminator here uses GroupNorm instead of
BatchNorm (no cross-process statistics under DDP, stable at small batches).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchDiscriminator", "d_hinge_loss", "g_hinge_loss", "adaptive_gan_weight"]


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming ``NLayerDiscriminator``): one logit per image patch.

    Args:
        channels: width of the first conv; doubled per layer up to 8x.
        layers: number of stride-2 convs (3: a 64x64 image gives 6x6 logits,
            each seeing a 70x70 receptive field).

    Input float (B, 3, S, S) in [-1, 1]; output float (B, 1, S', S') logits
    (real > 0, fake < 0).
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(math.gcd(32, out), out), nn.LeakyReLU(0.2)]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])``.

    Args:
        real_logits: float (B, 1, h, w) logits of real images.
        fake_logits: float (B, 1, h, w) logits of reconstructions (detached from G).

    Returns:
        float scalar.
    """
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-E[D(G(z))]``: float (B, 1, h, w) logits -> float scalar."""
    return -fake_logits.mean()


def adaptive_gan_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """Taming's adaptive weight of the generator loss (detached).

    Args:
        rec_loss: float scalar reconstruction loss (graph kept).
        g_loss: float scalar generator loss (graph kept).
        last_layer: the decoder's last weight (``VQGAN.last_layer``).
        max_weight: upper clamp.

    Returns:
        float32 scalar ``||dL_rec/dW|| / (||dL_G/dW|| + 1e-4)`` clamped to
        ``[0, max_weight]``; multiply it by a fixed factor (taming: 0.8) and
        add ``weight * g_loss`` to the loss.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
