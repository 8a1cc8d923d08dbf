"""Images between their two forms: RGB uint8 arrays (H, W, 3) and network tensors (3, H, W)
in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """Float (3, H, W) in [-1, 1] -> RGB uint8 (H, W, 3)."""
    scaled = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return scaled.byte().permute(1, 2, 0).cpu().numpy()
