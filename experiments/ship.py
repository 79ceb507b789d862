"""Should we ship it? One rule, the same in every report, for putting a learned policy in front of customers.

A learned policy is shipped (``SHIP``) only when both hold:

1. it beats the report's reference baseline (the best baseline not told the truth,
   :func:`promogym.agents.registry.reference_policy`) — with the paired 95% confidence interval of
   (learned − baseline) per episode above zero, on the common evaluation episodes (common random numbers);
2. the simulator's bias on the policy's own offers is within its stated band (``BIAS_BAND``, ±5% by default):
   what the simulator said the policy's decisions would earn, against what the world expects of the same
   decisions in the same states.

Otherwise the line says "do not ship: ship <baseline> instead" with every reason that failed: the CI
includes zero, the learned policy does worse, the bias is outside the band, or no fidelity was measured (a
report without a simulator cannot vouch for the numbers a shop would train and check its policy on).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

BIAS_BAND = 0.05  # the simulator's stated band: |model / world - 1| on the policy's own offers


@dataclasses.dataclass(frozen=True)
class ShipDecision:
    """The verdict on one learned policy and everything it rests on (for the report's line and summary.json)."""

    policy: str
    baseline: str
    ship: bool
    reasons: tuple[str, ...]
    diff: float | None
    diff_ci: tuple[float, float] | None
    episodes: int | None
    bias: float | None
    bias_ci: tuple[float, float] | None
    bias_source: str | None
    band: float
    unit: str = "per episode"          # what diff is measured in
    sample: str = "common episodes"    # what ``episodes`` counts

    def line(self) -> str:
        """The report's one line: ``SHIP`` with the evidence, or ``do not ship: ship <baseline> instead`` with
        the reasons."""
        if self.diff is not None and self.diff_ci is not None:
            lo, hi = self.diff_ci
            d = 0 if hi - lo >= 10 else 1  # whole units unless the CI is narrow
            vs = (f"{self.diff:+,.{d}f} [{lo:+,.{d}f}, {hi:+,.{d}f}] {self.unit} against {self.baseline} (paired 95% CI"
                  + (f", {self.episodes:,} {self.sample})" if self.episodes else ")"))
        else:
            vs = f"no paired comparison with {self.baseline}"
        if self.bias is not None:
            ci = f" [{self.bias_ci[0]:+.1%}, {self.bias_ci[1]:+.1%}]" if self.bias_ci is not None else ""
            bias = f"simulator bias {self.bias:+.1%}{ci} ({self.bias_source}; band ±{self.band:.0%})"
        else:
            bias = f"simulator bias not measured (band ±{self.band:.0%})"
        if self.ship:
            return f"**{self.policy}: SHIP** — {vs}; {bias}."
        return (f"**{self.policy}: do not ship — ship {self.baseline} instead** ({'; '.join(self.reasons)}) — "
                f"{vs}; {bias}.")

    def to_dict(self) -> dict[str, object]:
        """The decision as JSON-ready values, with its line."""
        out = dataclasses.asdict(self)
        out["line"] = self.line()
        return out


def ship_decision(policy: str, baseline: str, diff: float | None, diff_ci: Sequence[float] | None,
                  bias: float | None, *, band: float = BIAS_BAND, bias_ci: Sequence[float] | None = None,
                  bias_source: str | None = None, episodes: int | None = None, unit: str = "per episode",
                  sample: str = "common episodes") -> ShipDecision:
    """The verdict on ``policy`` against ``baseline``: ``diff`` is the mean of (learned − baseline) per common
    episode and ``diff_ci`` its paired 95% CI (None: no paired comparison); ``bias`` is the simulator's relative
    bias on the policy's own offers (None: not measured) and ``band`` the largest |bias| trusted; ``unit`` and
    ``sample`` name what ``diff`` is measured in and what ``episodes`` counts, for the line. Pure: the same inputs
    give the same decision."""
    if not (band >= 0 and math.isfinite(band)):
        raise ValueError(f"band must be a finite number >= 0, got {band}")
    reasons = []
    ci = None if diff_ci is None else (float(diff_ci[0]), float(diff_ci[1]))
    if ci is None or diff is None or not all(math.isfinite(x) for x in ci):
        reasons.append(f"no paired comparison with {baseline} on common episodes")
    elif ci[1] < 0:
        reasons.append(f"it does worse than {baseline}: the CI of the difference is below zero")
    elif ci[0] <= 0:
        reasons.append("the CI of the difference includes zero")
    bias_value = None if bias is None or not math.isfinite(bias) else float(bias)
    if bias_value is None:
        reasons.append("no fidelity measured: the simulator's bias on its offers is unknown")
    elif abs(bias_value) > band:
        reasons.append(f"the simulator's bias on its offers ({bias_value:+.1%}) is outside ±{band:.0%}")
    return ShipDecision(policy=policy, baseline=baseline, ship=not reasons, reasons=tuple(reasons),
                        diff=None if diff is None else float(diff), diff_ci=ci, episodes=episodes, bias=bias_value,
                        bias_ci=None if bias_ci is None else (float(bias_ci[0]), float(bias_ci[1])),
                        bias_source=bias_source if bias_value is not None else None, band=float(band), unit=unit,
                        sample=sample)


def _offer_bias(name: str, stats: Mapping[str, Any], fidelity: Mapping[str, Any] | None
                ) -> tuple[float | None, tuple[float, float] | None, str | None]:
    """The simulator's relative bias for one policy, from the best evidence the report holds: the expected profit
    of the policy's own offers in the simulator, model against world (same states, same decisions); else the
    fidelity stage's figure for that policy; else its simulated return against its world return on the same
    episode seeds."""
    own = (stats.get("offer_bias") or {}).get(name)
    if own and own.get("bias") is not None:
        ci = own.get("ci95")
        return own["bias"], None if ci is None else (ci[0], ci[1]), "its own offers in the simulator, model vs world"
    fid = (fidelity or {}).get(name)
    if fid and fid.get("profit", {}).get("bias") is not None:
        ci = fid["profit"].get("ci95")
        return fid["profit"]["bias"], None if ci is None or None in ci else (ci[0], ci[1]), "fidelity stage"
    ret = (stats.get("simulator_bias") or {}).get(name)
    if ret and ret.get("relative") is not None and ret.get("world"):
        lo, hi = ret["bias_ci95"]
        w = abs(ret["world"])
        return ret["relative"], (lo / w, hi / w), "simulated vs world return, same episodes"
    return None, None, None


def decisions(stats: Mapping[str, Any], fidelity: Mapping[str, Any] | None = None, band: float = BIAS_BAND
              ) -> dict[str, ShipDecision]:
    """The verdict on every learned policy of one env's report statistics (those of
    :func:`promogym.experiments.report.env_statistics`): against the report's reference (the best baseline not
    told the truth), with the paired A/B comparison it holds and the simulator's bias on the policy's offers
    (``fidelity``: the fidelity stage's figures per policy name, when the report has them)."""
    out = {}
    for name, p in stats["policies"].items():
        if not p.get("learned"):
            continue
        ab = (stats.get("ab_vs_reference") or {}).get(name)
        bias, bias_ci, source = _offer_bias(name, stats, fidelity)
        out[name] = ship_decision(name, stats["reference"], ab["diff"] if ab else None, ab["diff_ci"] if ab else None,
                                  bias, band=band, bias_ci=bias_ci, bias_source=source,
                                  episodes=ab["episodes"] if ab else None)
    return out


def decision_records(stats: Mapping[str, Any], fidelity: Mapping[str, Any] | None = None, band: float = BIAS_BAND
                     ) -> dict[str, dict[str, object]]:
    """:func:`decisions` as JSON-ready records with their lines: what a report stores (``stats["ship"]``) and
    prints (:func:`ship_lines`)."""
    return {name: d.to_dict() for name, d in decisions(stats, fidelity, band).items()}


def ship_lines(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The report's "Should we ship it?" lines (markdown list items) of the stored decision ``records``
    (:func:`decision_records`), one per learned policy; empty without any."""
    return [f"- {d['line']}" for d in records.values()]


RULE_TEXT = ("SHIP only when the learned policy beats the reference ({reference}) with the paired 95% CI "
             "of (learned − reference) {per} above zero, and the simulator's bias on the policy's own "
             "offers is within ±{band:.0%}; otherwise ship the reference.")


def rule_text(band: float = BIAS_BAND, reference: str = "the best baseline not told the truth",
              per: str = "per common episode") -> str:
    """The rule as a report states it, for ``band`` and the report's ``reference`` and unit of pairing ``per``."""
    return RULE_TEXT.format(band=band, reference=reference, per=per)

__all__ = ["BIAS_BAND", "RULE_TEXT", "ShipDecision", "decision_records", "decisions", "rule_text", "ship_decision",
           "ship_lines"]
