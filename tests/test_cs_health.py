"""Customer health edge cases and exact rounding, on a hand-built fixture
(tests/fixtures/cs_health_edges.sql). Every expected value is worked out by hand below.

Health rule (include/registry/customer_success.yaml): weighted mean of the components that have
evidence -- engagement 0.35 (needs a seat), adoption 0.25 (needs a seat and a released core
feature), support 0.20 (needs >= 3 tickets opened in [D-30, D)), devices 0.20 (needs an active
device) -- with the weights of the missing ones rescaled; NULL when none has evidence. Every
published value is computed exactly and rounded once, half away from zero; churn risk and the
composite score use the published (rounded) health, avg_engagement_score and
user_activation_rate of the same row.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from helpers import load_fixture, rows_by_key
from metrics_layer import pipeline
from metrics_layer.registry import load_registry

CS = load_registry()["customer_success"]
D = date(2026, 3, 10)
TABLE = "entity.metrics_customer_success"
SCORES = ("customer_health_score", "churn_risk_score", "composite_success_score")

EXPECTED = {
    # 11, no seats: only the device component has evidence (adoption needs a user to adopt
    #   anything) -> health = 80.00. MRR flat at 100 -> contraction 0:
    #   churn = 0.7*(100-80) + 0.3*0 = 14.00. Composite: health only -> 80.00.
    #   (Before: adoption 0 counted: (0.25*0 + 0.20*80)/0.45 = 35.56, churn 45.11.)
    11: {"customer_health_score": Decimal("80.00"), "churn_risk_score": Decimal("14.00"),
         "composite_success_score": Decimal("80.00"), "core_feature_adoption_rate": Decimal("0.0000"),
         "user_activation_rate": None, "avg_engagement_score": None},
    # 12, signed up on D-1 (no seats, tickets or devices yet): no component -> NULL health, NULL
    #   churn, NULL composite. Its subscription started on D-1: in force on D -> 50.00.
    #   (Before: health 0.00, churn 100.00, composite 0.00: "At Risk" from day one.)
    12: {"customer_health_score": None, "churn_risk_score": None, "composite_success_score": None,
         "current_mrr": Decimal("50.00"), "previous_month_mrr": None},
    # 13, first ticket still open: 1 ticket < 3 -> support left out. Engagement 2/2 = 100,
    #   adoption 6/6 = 100 -> health (35 + 25)/0.6 = 100.00; churn 0.7*0 + 0.3*0 = 0.00;
    #   avg_engagement 100*2/(30*2) = 3.33; activation 2/2 -> 100;
    #   composite 0.5*100 + 0.25*3.33 + 0.25*100 = 75.8325 -> 75.83.
    #   (Before: support 0 counted: health (35 + 25 + 0)/0.8 = 75.00, a 25-point drop.)
    13: {"customer_health_score": Decimal("100.00"), "churn_risk_score": Decimal("0.00"),
         "composite_success_score": Decimal("75.83"), "support_tickets_30d": 1,
         "ticket_resolution_rate": Decimal("0.0000"), "avg_engagement_score": Decimal("3.33")},
    # 14, first ticket resolved (6 h): support left out. Engagement 1/2 = 50, adoption 3/6 = 50
    #   -> health (17.5 + 12.5)/0.6 = 50.00; churn 0.7*50 = 35.00; avg_engagement
    #   100*1/60 = 1.67; composite 0.5*50 + 0.25*1.67 + 0.25*100 = 50.4175 -> 50.42.
    #   (Before: support 100 counted: health (17.5 + 12.5 + 20)/0.8 = 62.50.)
    14: {"customer_health_score": Decimal("50.00"), "churn_risk_score": Decimal("35.00"),
         "composite_success_score": Decimal("50.42"), "ticket_resolution_rate": Decimal("1.0000"),
         "avg_ticket_resolution_hours": Decimal("6.00")},
    # 15, three tickets, one resolved: support counts, 100/3. Health
    #   (35 + 25 + 0.20*100/3)/0.8 = 83.333.. -> 83.33; churn 0.7*(100 - 83.33) = 11.669 -> 11.67;
    #   composite 0.5*83.33 + 0.25*3.33 + 0.25*100 = 67.4975 -> 67.50.
    15: {"customer_health_score": Decimal("83.33"), "churn_risk_score": Decimal("11.67"),
         "composite_success_score": Decimal("67.50"), "ticket_resolution_rate": Decimal("0.3333")},
    # 16, exact ties: engagement 1/3 seats -> 100/3, adoption 5/6 -> 500/6, devices 90, no
    #   tickets: health = (0.35*100/3 + 0.25*500/6 + 0.20*90)/0.8 = 50.5/0.8 = 63.125 exactly
    #   -> 63.13 (before: 63.12, the components were rounded to 16 digits before the sum).
    #   No subscription -> no contraction: churn = 100 - 63.13 = 36.87 (before 36.88, from the
    #   unrounded health). avg_engagement 100*1/90 = 1.11; activation 1/3 -> 0.3333;
    #   composite 0.5*63.13 + 0.25*1.11 + 0.25*33.33 = 40.175 exactly -> 40.18 (before 40.17).
    16: {"customer_health_score": Decimal("63.13"), "churn_risk_score": Decimal("36.87"),
         "composite_success_score": Decimal("40.18"), "avg_engagement_score": Decimal("1.11"),
         "user_activation_rate": Decimal("0.3333"), "current_mrr": Decimal("0.00"),
         "previous_month_mrr": None},
    # 17, sixteen seats, three active on D-1 once each: avg_engagement = 100*3/(30*16) = 0.625
    #   exactly -> 0.63 (before 0.62: the mean of 100/30-per-day shares summed rounded values).
    #   Engagement 3/16 = 18.75, adoption 0/6 -> health 0.35*18.75/0.6 = 10.9375 -> 10.94;
    #   churn 0.7*(100 - 10.94) = 62.342 -> 62.34; composite
    #   0.5*10.94 + 0.25*0.63 + 0.25*100 = 30.6275 -> 30.63 (before 30.62).
    17: {"customer_health_score": Decimal("10.94"), "churn_risk_score": Decimal("62.34"),
         "composite_success_score": Decimal("30.63"), "avg_engagement_score": Decimal("0.63"),
         "monthly_active_users": 3},
}


@pytest.fixture
def rows(conn):
    load_fixture(conn, "cs_health_edges.sql")
    pipeline.refresh_domain(conn, CS, D, run_id="health-edges")
    return rows_by_key(conn, TABLE, D, "customer_id")


def _got(rows, cid):
    return {k: rows[cid][k] for k in EXPECTED[cid]}


def test_a_customer_without_seats_is_scored_on_what_it_has(rows):
    assert _got(rows, 11) == EXPECTED[11]


def test_a_brand_new_account_has_no_health_yet(rows):
    assert _got(rows, 12) == EXPECTED[12]


def test_a_first_unresolved_ticket_does_not_swing_health(rows):
    assert _got(rows, 13) == EXPECTED[13]


def test_a_first_resolved_ticket_does_not_swing_health(rows):
    assert _got(rows, 14) == EXPECTED[14]


def test_support_counts_from_three_tickets(rows):
    assert _got(rows, 15) == EXPECTED[15]


def test_exact_ties_round_half_up_and_scores_use_the_published_health(rows):
    assert _got(rows, 16) == EXPECTED[16]


def test_avg_engagement_score_tie_is_computed_exactly(rows):
    assert _got(rows, 17) == EXPECTED[17]


def test_plan_is_null_without_a_subscription_in_force(rows):
    # plan is historized from raw.subscriptions: Tie Corp has none, whatever raw.customers says
    assert (rows[16]["plan"], rows[12]["plan"], rows[17]["plan"]) == (None, "starter", "enterprise")


def test_every_row_is_recomputable_from_its_published_values(rows):
    # churn and composite follow from the published health, engagement and activation
    for cid, r in rows.items():
        h = r["customer_health_score"]
        if h is None:
            assert r["churn_risk_score"] is None, cid
            continue
        prev, cur = r["previous_month_mrr"], r["current_mrr"]
        if prev is None:
            churn = 100 - h
        else:
            churn = Decimal("0.7") * (100 - h) + Decimal("0.3") * 100 * min(prev, max(0, prev - cur)) / prev
        assert r["churn_risk_score"] == churn.quantize(Decimal("0.01"), "ROUND_HALF_UP"), cid
        parts = [(Decimal("0.5"), h), (Decimal("0.25"), r["avg_engagement_score"]),
                 (Decimal("0.25"), None if r["user_activation_rate"] is None else 100 * r["user_activation_rate"])]
        parts = [(w, v) for w, v in parts if v is not None]
        composite = sum(w * v for w, v in parts) / sum(w for w, _ in parts)
        assert r["composite_success_score"] == composite.quantize(Decimal("0.01"), "ROUND_HALF_UP"), cid
