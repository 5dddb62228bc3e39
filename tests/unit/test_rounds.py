"""The interleaving order of A/B and confirmation rounds."""

from __future__ import annotations

from harness.plan.points import Point, ServerConfig
from harness.plan.rounds import balanced_rounds, plan_rounds


def test_balanced_rounds_of_two_arms_is_abba():
    assert balanced_rounds(["A", "B"], 4) == [["A", "B"], ["B", "A"], ["B", "A"], ["A", "B"]]


def test_balanced_rounds_put_every_arm_in_every_place_equally_often():
    rounds = balanced_rounds(["A", "B", "C"], 6)
    for place in range(3):
        column = [order[place] for order in rounds]
        assert sorted(column) == ["A", "A", "B", "B", "C", "C"]
    before = sum(order.index("A") < order.index("B") for order in rounds)
    assert before == 3  # A precedes B in half the rounds
    assert all(sorted(order) == ["A", "B", "C"] for order in rounds)


def test_plan_measures_every_point_on_every_arm_each_round_with_the_round_as_repeat():
    points = [
        Point(ServerConfig(None, 1), "concurrency", 8, "grpc"),
        Point(ServerConfig(None, 2), "concurrency", 8, "grpc"),
    ]
    steps = plan_rounds(["base", "head"], points, 2)
    assert [(s.round, s.arm, s.point.replicas) for s in steps] == [
        (0, "base", 1),
        (0, "head", 1),
        (0, "base", 2),
        (0, "head", 2),
        (1, "head", 1),
        (1, "base", 1),
        (1, "head", 2),
        (1, "base", 2),
    ]
    assert steps[4].point.key == "nobatch-r1-grpc-c8-rep1"
