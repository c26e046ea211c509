"""What became of one block: its recipe's stages, products and failures (``contimg run
--json`` prints one per block)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DONE, FAILED, PENDING = "done", "failed", "pending"


@dataclass(frozen=True)
class BlockOutcome:
    """``outcome``: ``done`` (every stage of its recipe done), ``failed`` (a stage failed for
    good: dead-lettered with ``errors``) or ``pending``. ``kind``: ``calibrator``, ``target``
    or None before the block store exists. ``products``: ``{stage, kind, path}`` of the final
    products; ``latency_s``: first file registered to last stage done (done blocks)."""

    block_id: str
    outcome: str
    kind: str | None
    stages: dict[str, str]
    products: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    latency_s: float | None = None
    within_budget: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"block_id": self.block_id, "outcome": self.outcome, "kind": self.kind,
                "stages": dict(self.stages), "products": list(self.products),
                "errors": list(self.errors), "latency_s": self.latency_s,
                "within_budget": self.within_budget}
