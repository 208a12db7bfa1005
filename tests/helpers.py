"""Small helpers shared by several test files (pytest puts tests/ on sys.path)."""

import torch


def randomise(model, seed: int = 0):
    "Random values everywhere (norm gains around 1), so that swapped or shared tensors would show."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.2 * noise if p.dim() == 1 else 0.1 * noise)
    return model
