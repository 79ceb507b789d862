"""The loop report (``promogym loop``): per variant and round, the deployed policy's world value with its CI, the
simulator's bias on that policy's own offers before and after the refit, the coverage of those offers by the data,
the gate's OPE estimate beside the true world difference (a check of the OPE itself) and what the gate decided;
the gate's errors counted; the targets read against the references; plots of value and |bias| by round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import write_json
from promogym.core.plots import pyplot, save_png
from promogym.experiments.loop import GATE_ERROR_SHARE, VARIANTS

BIAS_TARGET = 0.03  # |bias| on the deployed policy's offers by the last round
VALUE_SHARE_TARGET = 0.95  # of the world-trained agent


def _name(spec: str) -> str:
    """A short label of a policy spec: a rule's name, a run folder's round (``agent r1``)."""
    p = Path(spec)
    if not p.is_absolute():
        return spec
    stage = p.parent  # .../s0/<variant>/r<k>/train or .../s0/r0/train
    return f"agent {stage.parent.name}"


def deployed_value(rec: dict[str, Any]) -> dict[str, Any]:
    """The deployed policy's world value on the evaluation seeds (the candidate's or the incumbent's)."""
    g = rec["gate"]
    return g["world"]["candidate" if g["deployed_is_candidate"] else "incumbent"]


def gate_error(rec: dict[str, Any]) -> bool:
    """Whether the round deployed a candidate whose world value is below the incumbent's by more than 1%."""
    g = rec["gate"]
    if not g["deployed_is_candidate"]:
        return False
    cand, inc = g["world"]["candidate"]["mean"], g["world"]["incumbent"]["mean"]
    return bool(cand < inc - GATE_ERROR_SHARE * abs(inc))


def _bias(f: dict[str, Any] | None) -> float | None:
    return None if not f else f["profit"].get("bias")


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per (variant, round): means over seeds of the deployed value, the biases and the thin share; the gate's
    errors; the targets."""
    recs = result["records"]
    rounds = sorted({r["round"] for r in recs})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in recs)]
    table: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        rows = []
        for k in rounds:
            sel = [r for r in recs if r["variant"] == v and r["round"] == k]
            values = np.array([deployed_value(r)["mean"] for r in sel])
            row = {"round": k, "seeds": len(sel), "deployed_value": float(values.mean()),
                   "deployed_value_per_seed": values.tolist(),
                   "deployed_candidate": int(sum(r["gate"]["deployed_is_candidate"] for r in sel)),
                   "bias_after": _mean([_bias(r["fidelity"]) for r in sel]),
                   "bias_before": _mean([_bias(r["fidelity_before"]) for r in sel]),
                   "abs_bias_after": _mean([abs(b) for r in sel if (b := _bias(r["fidelity"])) is not None]),
                   "thin_share": _mean([(r["fidelity"].get("coverage") or {}).get("thin_share") for r in sel]),
                   "gate_errors": int(sum(gate_error(r) for r in sel))}
            if v == "passive":
                row["abs_bias_on_full"] = _mean([abs(b) for r in sel
                                                 if (b := _bias(r.get("fidelity_on_full"))) is not None])
            rows.append(row)
        table[v] = rows
    refs = result.get("references", {})
    targets: list[dict[str, Any]] = []
    if "full" in table:
        last = table["full"][-1]
        best = refs.get("best_static_world", {}).get("mean")
        if best is not None:
            targets.append({"target": f"round {last['round']}: deployed value >= the best constant price searched in "
                                      "the world", "measured": f"{last['deployed_value']:,.0f} against {best:,.0f}",
                            "met": last["deployed_value"] >= best})
        agent = refs.get("world_agent", {}).get("mean")
        if agent is not None:
            share = last["deployed_value"] / agent if agent else float("nan")
            targets.append({"target": f"round {last['round']}: >= 95% of the world-trained agent",
                            "measured": f"{share:.1%} ({last['deployed_value']:,.0f} against {agent:,.0f})",
                            "met": bool(share >= VALUE_SHARE_TARGET)})
        if last["abs_bias_after"] is not None:
            targets.append({"target": f"round {last['round']}: |bias| on the deployed policy's offers < 3%",
                            "measured": f"{last['abs_bias_after']:.1%}",
                            "met": last["abs_bias_after"] < BIAS_TARGET})
        if "passive" in table:
            pairs = [(f, p) for f, p in zip(table["full"], table["passive"], strict=True)
                     if f["abs_bias_after"] is not None and p.get("abs_bias_on_full") is not None]
            if pairs:
                below = sum(f["abs_bias_after"] < p["abs_bias_on_full"] for f, p in pairs)
                targets.append({"target": "|bias| on the full loop's deployed policy below the passive loop's model's, "
                                          "every round",
                                "measured": f"{below} of {len(pairs)} rounds", "met": below == len(pairs)})
        errors = sum(r["gate_errors"] for r in table["full"])
        gated = sum(r["seeds"] for r in table["full"])
        targets.append({"target": "the gate never deploys a policy > 1% below the incumbent in the world",
                        "measured": f"{errors} of {gated} gated rounds", "met": errors == 0})
    return {"rounds": rounds, "variants": variants, "table": table, "targets": targets}


def _mean(x: list[float | None]) -> float | None:
    vals = [v for v in x if v is not None]
    return float(np.mean(vals)) if vals else None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def _ci(d: dict[str, Any]) -> str:
    lo, hi = d.get("ci95", [None, None])
    return "" if lo is None else f" [{lo:,.0f}, {hi:,.0f}]"


def _gate_words(gate: dict[str, Any]) -> str:
    """How the gate judged, in words."""
    per = ("per season: the simulator's paired seasons (" + f"{gate['sim_episodes']} a policy) plus a "
           "correction of its per-visit error measured on the deployed rows") if gate["estimator"] == "season_dr" \
        else "per logged day on the deployed rows"
    bound = f"{gate['level']:.0%} lower bound above {gate['margin']:g} x the incumbent's"
    if gate.get("ab_only"):
        return (f"a paired A/B test of {gate['ab_episodes']} world seasons ({bound} value) decides, the OPE "
                f"({gate['estimator'].upper()} {per}) reported beside it")
    ab = f", and a paired A/B test of {gate['ab_episodes']} world seasons" if gate.get("ab_episodes") else ""
    return f"{gate['estimator'].upper()} {per}, {bound} estimate{ab}"


def markdown(result: dict[str, Any], summary: dict[str, Any], seconds: float | None) -> str:
    """The report's markdown."""
    cfg = result["config"]
    lines = [f"# Closed loop: {cfg['name']} on {cfg['env']}", "",
             f"{cfg['loop']['seeds']} seed(s) x {cfg['loop']['rounds']} round(s); simulator "
             f"{cfg['predictor']['kind']}; agent {cfg['agent']['algo']}; each round deploys for "
             f"{cfg['deploy']['episodes']} seasons with exploration "
             f"{cfg['deploy']['exploration']}; gate {_gate_words(cfg['gate'])}; world values on "
             f"{cfg['evaluate']['episodes']} common evaluation "
             "episodes" + (f"; this invocation {seconds:,.0f} s" if seconds is not None else "") + ".", ""]
    timing = result.get("timing")
    if timing:
        lines += [f"Run time: {timing['span_seconds'] / 3600:.2f} h from the first stage's start to the last one's "
                  f"end, {timing['stage_seconds'] / 3600:.2f} h of stage time summed (seeds run in parallel).", ""]
    refs = result.get("references", {})
    if refs:
        lines.append("References: " + "; ".join(f"{k} {v['mean']:,.0f}{_ci(v)}" for k, v in refs.items()) + ".")
        lines.append("")
    lines += ["## By round (means over seeds)", "",
              "| variant | round | deployed world value | candidate deployed | bias before refit | bias after refit "
              "| thin share | gate errors |", "|---|---|---|---|---|---|---|---|"]
    for v in summary["variants"]:
        for row in summary["table"][v]:
            thin = "—" if row["thin_share"] is None else f"{row['thin_share']:.1%}"
            lines.append(f"| {v} | {row['round']} | {row['deployed_value']:,.0f} | {row['deployed_candidate']} of "
                         f"{row['seeds']} | {_pct(row['bias_before'])} | {_pct(row['bias_after'])} | {thin} | "
                         f"{row['gate_errors']} |")
    lines += ["", "## Every gate: the OPE beside the truth", "",
              "| seed | variant | round | candidate | incumbent | OPE difference per day [CI] | OPE per season | "
              "world difference per season [95% CI] | deployed | decision |", "|---" * 10 + "|"]
    for r in result["records"]:
        g, ope = r["gate"], r["gate"]["ope"]
        d, w = ope["difference"], g["world"]["difference"]
        lines.append(f"| {r['seed']} | {r['variant']} | {r['round']} | {_name(g['candidate'])} | "
                     f"{_name(g['incumbent'])} | {d['mean']:+,.1f} [{d['ci'][0]:+,.1f}, {d['ci'][1]:+,.1f}] | "
                     f"{d['per_episode']:+,.0f} | "
                     f"{w['mean']:+,.0f}{_ci(w)} | {_name(g['deployed'])} | {g['decision']} |")
    seasons = [r for r in result["records"] if r["gate"]["ope"].get("season")]
    if seasons:
        lines += ["", "## The season estimates' parts", "",
                  "The simulator's paired seasons, each policy's correction of the simulator's per-visit error "
                  "measured on the deployed rows (per season), the estimate and the truth; the candidate's coverage by "
                  "the rows (effective sample size of its weights, in visits; the visits it matches and how many of "
                  "them bought).", "",
                  "| seed | variant | round | simulated difference | correction: candidate | correction: incumbent | "
                  "season estimate [CI] | world difference | candidate's ess | matched visits | purchases among "
                  "them |", "|---" * 11 + "|"]
        for r in seasons:
            x, w = r["gate"]["ope"]["season"], r["gate"]["world"]["difference"]
            lines.append(f"| {r['seed']} | {r['variant']} | {r['round']} | {x['simulated']:+,.0f} | "
                         f"{x['correction_candidate']:+,.0f} | {x['correction_incumbent']:+,.0f} | {x['diff']:+,.0f} "
                         f"[{x['diff_ci'][0]:+,.0f}, {x['diff_ci'][1]:+,.0f}] | {w['mean']:+,.0f} | "
                         f"{x['ess']:,.0f} | {x.get('matched_visits', '—')} ({x['nonzero_share']:.2%}) | "
                         f"{x.get('matched_purchases', '—')} |")
    if summary["targets"]:
        lines += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['measured']} | {'met' if t['met'] else 'missed'} |"
                  for t in summary["targets"]]
    lines += ["", "![world value and |bias| by round](loop.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    """World value of the deployed policy and |bias| on its offers by round, per variant."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for v in summary["variants"]:
        rows = summary["table"][v]
        a.plot([r["round"] for r in rows], [r["deployed_value"] for r in rows], marker="o", label=v)
        b.plot([r["round"] for r in rows], [r["abs_bias_after"] if r["abs_bias_after"] is not None else np.nan
                                            for r in rows], marker="o", label=v)
    for name, ref in result.get("references", {}).items():
        a.axhline(ref["mean"], ls="--", lw=1, color="grey")
        a.annotate(name, (summary["rounds"][0], ref["mean"]), fontsize=7, color="grey")
    b.axhline(0.03, ls="--", lw=1, color="grey")
    a.set(xlabel="round", ylabel="world value of the deployed policy", title="value")
    b.set(xlabel="round", ylabel="|bias| on its offers (after refit)", title="simulator bias")
    a.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def write_loop_report(result: dict[str, Any], out: str | Path, seconds: float | None = None) -> Path:
    """``loop.md``, ``loop.json`` (the records and the summary) and ``loop.png`` in ``out``; returns the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    write_json(out / "loop.json", {**result, "summary": summary, "seconds": seconds})
    plot(result, summary, out / "loop.png")
    md = out / "loop.md"
    md.write_text(markdown(result, summary, seconds))
    return md
