"""The `auto` strategy: measure each domain's difficulty with short pilots, then allocate.

Stage 1 (no pilot outputs yet): `pilots()` asks for the measuring runs (`pilots`), which cost
`auto.pilot_fraction` of the domain-phase budget, charged to this strategy. Stage 2:
`assign(pilot_outputs)` decides sizes and steps from them (`decide`: curves fitted by `curves`,
the budget split by `solver`) and returns the decision with the experts. See docs/auto.md.
"""

from __future__ import annotations

from pathlib import Path

from hdee.strategies.auto.decide import decide, describe
from hdee.strategies.auto.pilots import pilot_specs
from hdee.strategies.base import Assignment, PilotSpec, Strategy, register


@register("auto", needs_sizes=True, heterogeneous=True, order=4, describe=describe)
class Auto(Strategy):
    """Sizes and steps chosen from measured difficulty under the baseline's domain-phase budget."""

    def pilots(self) -> list[PilotSpec]:
        return pilot_specs(self.cfg, self.ctx.vocab)

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment | None:
        if pilot_outputs is None:
            return None
        decision = decide(self.cfg, self.ctx.vocab, pilot_outputs)
        alloc = decision.allocation
        experts = self.lineage_experts(lambda lin, i: alloc.sizes[lin], lambda lin, i: alloc.steps[lin][i - 1])
        return Assignment(experts, decision.to_dict())
