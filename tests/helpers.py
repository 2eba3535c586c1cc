"""Shared test helpers."""
import torch


def overfit(net, x, y, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    """Train ``net`` on one batch with Adam; the first and the last loss."""
    opt = torch.optim.Adam(net.parameters(), lr)
    first = last = None
    for _ in range(steps):
        loss = net.loss(net(x), y)
        first = loss.item() if first is None else first
        last = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, last
