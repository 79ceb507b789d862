"""The ship rule: one pure function, each branch of it, and the reports' lines built from it."""

from __future__ import annotations

import pytest

from promogym.experiments.ship import BIAS_BAND, decision_records, decisions, ship_decision, ship_lines


def test_ships_when_the_ci_is_above_zero_and_the_bias_within_the_band():
    d = ship_decision("ppo@sim", "best_static", 120.0, (40.0, 200.0), -0.03, episodes=100)
    assert d.ship and d.reasons == ()
    assert d.line().startswith("**ppo@sim: SHIP**") and "band ±5%" in d.line() and "100 common episodes" in d.line()


@pytest.mark.parametrize(("diff", "ci", "bias", "needle"), [
    (30.0, (-10.0, 70.0), 0.01, "includes zero"),
    (-80.0, (-120.0, -40.0), 0.01, "does worse than best_static"),
    (120.0, (40.0, 200.0), -0.08, "outside ±5%"),
    (120.0, (40.0, 200.0), 0.0501, "outside ±5%"),
    (120.0, (40.0, 200.0), None, "no fidelity measured"),
    (None, None, 0.01, "no paired comparison"),
    (0.0, (0.0, 0.0), 0.01, "includes zero"),  # a tie is no win
])
def test_every_failing_condition_says_ship_the_baseline_instead(diff, ci, bias, needle):
    d = ship_decision("ppo@sim", "best_static", diff, ci, bias)
    assert not d.ship
    assert needle in "; ".join(d.reasons)
    assert "do not ship — ship best_static instead" in d.line() and needle in d.line()


def test_both_failures_are_named_and_the_band_is_a_parameter():
    d = ship_decision("a2c@world", "list_price", -5.0, (-20.0, 10.0), 0.07)
    assert len(d.reasons) == 2
    assert ship_decision("a2c@world", "list_price", 50.0, (10.0, 90.0), 0.07, band=0.10).ship
    assert not ship_decision("a2c@world", "list_price", 50.0, (10.0, 90.0), 0.07, band=BIAS_BAND).ship
    assert "±10%" in ship_decision("x", "y", 1.0, (0.5, 1.5), 0.0, band=0.10).line()
    with pytest.raises(ValueError, match="band"):
        ship_decision("x", "y", 1.0, (0.5, 1.5), 0.0, band=-0.1)


def _stats(offer_bias=None, simulator_bias=None, lo=40.0):
    return {"reference": "best_static",
            "policies": {"best_static": {"learned": False}, "ppo@sim": {"learned": True}},
            "ab_vs_reference": {"ppo@sim": {"diff": 100.0, "diff_ci": (lo, 160.0), "episodes": 50}},
            "offer_bias": offer_bias or {}, "simulator_bias": simulator_bias or {}}


def test_decisions_read_the_best_bias_evidence_a_report_holds():
    own = {"ppo@sim": {"bias": -0.02, "ci95": (-0.03, -0.01)}}
    ret = {"ppo@sim": {"relative": -0.09, "world": 1000.0, "bias_ci95": (-100.0, -80.0)}}
    # its own offers in the simulator win over the return comparison
    d = decisions(_stats(own, ret))["ppo@sim"]
    assert d.ship and d.bias == -0.02 and "own offers" in d.bias_source
    # without them, the simulated against the world return on the same episodes
    d = decisions(_stats(None, ret))["ppo@sim"]
    assert not d.ship and d.bias == -0.09 and d.bias_ci == (-0.1, -0.08)
    # the fidelity stage's figure for a policy of that name comes before the return comparison
    fid = {"ppo@sim": {"profit": {"bias": 0.01, "ci95": [0.0, 0.02]}}}
    assert decisions(_stats(None, ret), fid)["ppo@sim"].ship
    # nothing measured: do not ship; baselines get no line
    assert decisions(_stats())["ppo@sim"].reasons == ("no fidelity measured: the simulator's bias on its offers is "
                                                      "unknown",)
    assert list(decisions(_stats())) == ["ppo@sim"]
    line = ship_lines(decision_records(_stats(own, lo=-5.0)))[0]
    assert line.startswith("- **ppo@sim: do not ship — ship best_static instead**")
