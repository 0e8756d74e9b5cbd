"""GZSL metrics and the calibration sweep against hand-computed cases (docs/benchmark.md)."""

from __future__ import annotations

import pytest
import torch

from model.metrics import beta_grid, calibrate, gzsl_scores, harmonic_mean, predict
from model.protocol import beta_at_sweep_end

# 4 classes: 0, 1 seen; 2, 3 unseen. Class 4 exists globally but is outside the split.
SEEN, UNSEEN = [0, 1], [2, 3]
BIG = 1e9


def dist(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_per_class_mean_accuracy_by_hand():
    # labels: 0,0,0,1 | 2,2 | 3 ; class 4 column is the nearest for one video but is not a candidate
    d = dist(
        [
            [0.1, 1.0, 2.0, 2.0, 0.0],  # label 0 -> 0 ok (class 4 ignored)
            [0.5, 0.2, 2.0, 2.0, 9.0],  # label 0 -> 1 wrong
            [0.1, 0.9, 0.8, 2.0, 9.0],  # label 0 -> 0 ok
            [0.9, 0.1, 2.0, 2.0, 9.0],  # label 1 -> 1 ok
            [0.3, 0.9, 0.5, 0.7, 9.0],  # label 2 -> 0 wrong in GZSL, 2 in ZSL
            [0.9, 0.9, 0.5, 0.4, 9.0],  # label 2 -> 3 wrong in both
            [0.9, 0.9, 0.6, 0.1, 9.0],  # label 3 -> 3 ok
        ]
    )
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 3])
    sc = gzsl_scores(d, labels, SEEN, UNSEEN, beta=0.0)
    # S = mean(2/3, 1) ; U = mean(0, 1) ; ZSL = mean(1/2, 1)
    assert sc.seen == pytest.approx((2 / 3 + 1) / 2)
    assert sc.unseen == pytest.approx(0.5)
    assert sc.hm == pytest.approx(2 * (5 / 6) * 0.5 / (5 / 6 + 0.5))
    assert sc.zsl == pytest.approx(0.75)
    assert sc.per_class == pytest.approx({0: 2 / 3, 1: 1.0, 2: 0.0, 3: 1.0})


def test_beta_penalises_every_seen_class():
    d = dist([[0.3, 0.9, 0.5, 0.7]])
    assert predict(d, [0, 1, 2, 3], SEEN, 0.0).item() == 0
    assert predict(d, [0, 1, 2, 3], SEEN, 0.19).item() == 0
    assert predict(d, [0, 1, 2, 3], SEEN, 0.21).item() == 2


def test_zsl_does_not_depend_on_beta():
    d = dist([[0.3, 0.9, 0.5, 0.7], [0.9, 0.9, 0.6, 0.1]])
    labels = torch.tensor([2, 3])
    zs = {gzsl_scores(d, labels, SEEN, UNSEEN, b).zsl for b in (0.0, 1.0, 3.0)}
    assert zs == {1.0}


def test_harmonic_mean_zero_when_one_side_zero():
    assert harmonic_mean(0.8, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)


def test_published_sweep_grid():
    grid = beta_grid(0.0, 3.0, 16)
    assert len(grid) == 16
    assert grid[0] == 0.0 and grid[-1] == 3.0
    assert grid[1] == pytest.approx(0.2)


def test_calibration_picks_first_maximiser_and_returns_curve():
    # seen video at distance margin 0.5 from the unseen class; unseen video 0.3 closer to a seen class.
    d = dist(
        [
            [0.0, BIG, 0.5, BIG],  # label 0: stays correct while beta < 0.5
            [0.0, BIG, 0.3, BIG],  # label 2: becomes correct once beta > 0.3
            [BIG, 0.0, BIG, 2.0],  # label 1: correct until beta > 2.0
            [BIG, 0.0, BIG, 0.1],  # label 3: correct once beta > 0.1
        ]
    )
    labels = torch.tensor([0, 2, 1, 3])
    best, curve = calibrate(d, labels, SEEN, UNSEEN, beta_grid(0.0, 3.0, 16))
    hms = [c["HM"] for c in curve]
    assert len(curve) == 16
    # beta 0.4 is the first grid value with both unseen right and both seen right: HM = 1
    assert best.beta == pytest.approx(0.4)
    assert best.hm == pytest.approx(1.0)
    assert hms.index(max(hms)) == 2
    assert curve[0]["U"] == 0.0  # beta = 0: both unseen videos go to seen classes
    assert curve[-1]["S"] == 0.0  # beta = 3: every seen video is pushed to an unseen class


def test_calibration_rejects_empty_grid():
    with pytest.raises(ValueError, match="empty beta grid"):
        calibrate(dist([[0.0, 1.0, 1.0, 1.0]]), torch.tensor([0]), SEEN, UNSEEN, [])


def test_note_when_calibration_stops_at_the_sweeps_end():
    grid = (0.0, 3.0, 16)
    last = float(beta_grid(*grid)[-1])
    note = beta_at_sweep_end(grid, last)
    assert note is not None and "beta 3" in note and "train.beta_grid" in note
    assert beta_at_sweep_end(grid, float(beta_grid(*grid)[-2])) is None
    assert beta_at_sweep_end((0.0, 0.0, 1), 0.0) is None  # one fixed beta: nothing was swept
