"""DnCNN-S (Zhang et al., TIP 2017): the hand-designed peer our searched networks are
compared with. The layout matches the converted public weights in shared/peers/."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from restore.errors import RestoreError


class DnCNN(nn.Module):
    size_multiple = 1

    def __init__(self, channels: int = 1, depth: int = 17, features: int = 64):
        super().__init__()
        layers = [nn.Conv2d(channels, features, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features, eps=1e-4), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, channels, 3, padding=1, bias=False))
        self.dncnn = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.dncnn(x)  # the network predicts the noise


def load_peer(path: Path) -> DnCNN:
    """The gray DnCNN-S peer with its weights, in inference mode (one loader for eval and benchmarks)."""
    from restore.zoo.registry import load_weights  # the zoo's safetensors reader, strict

    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"DnCNN weights not found: {path}")
    return load_weights(DnCNN(channels=1), path).eval()
