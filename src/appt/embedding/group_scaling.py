"""How a stage scales the neighbour coordinates of each group before the sin/cos encoding.

The encoding ``sin(beta * x / alpha^f)`` needs ``x`` of order 1, so relative xyz are divided by a
scale. Three rules exist, all ``(B, G, k, 3) -> (B, G, k, 3)``:

- ``cloud_std`` (appt's default): one standard deviation per cloud. Groups keep their relative
  sizes, and a cloud's output never depends on the other clouds of its batch.
- ``group_max_abs`` (the authors' ScanObjectNN encoder): each group and axis divided by its own
  largest absolute offset (plus ``1e-6``), so every group fills ``[-1, 1]`` per axis and the
  absolute size of a neighbourhood is lost.
- ``batch_std`` (the authors' ModelNet40 encoder): one standard deviation over the whole batch
  (plus ``1e-5``), so a cloud's output depends on the other clouds of its batch.
"""

from __future__ import annotations

from torch import Tensor

GROUP_SCALINGS = ("cloud_std", "group_max_abs", "batch_std")


def scale_groups(rel: Tensor, rule: str) -> Tensor:
    """Divide relative neighbour xyz ``rel (B, G, k, 3)`` by the scale ``rule`` names (see module doc)."""
    if rule == "cloud_std":
        return rel / rel.flatten(1).std(dim=1).clamp_min(1e-5).view(-1, 1, 1, 1)
    if rule == "group_max_abs":
        return rel / (rel.abs().amax(dim=2, keepdim=True) + 1e-6)
    if rule == "batch_std":
        return rel / (rel.std() + 1e-5)
    raise ValueError(f"group scaling must be one of {', '.join(GROUP_SCALINGS)}, got {rule!r}")
