import numpy as np
import pytest

from variants.evaluation import accuracy, expected_calibration_error, label_distribution, macro_f1


def test_accuracy_and_macro_f1():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    assert accuracy(y, p) == pytest.approx(0.6)
    # per-class F1: c0 = 2*1/(2+1+1)=0.5, c1 = 2*2/(4+1+0)=0.8, c2 = 0 -> mean 0.4333
    assert macro_f1(y, p, 4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_ece_is_zero_for_perfect_calibration_and_positive_for_overconfidence():
    y = np.array([0, 1, 0, 1])
    confident_right = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(confident_right, y, 10) == pytest.approx(0.0)
    confident_wrong = confident_right[:, ::-1]
    assert expected_calibration_error(confident_wrong, y, 10) == pytest.approx(1.0)


def test_label_distribution_sums_to_one():
    dist = label_distribution(np.array([0, 0, 2]), ["a", "b", "c"])
    assert dist == pytest.approx({"a": 2 / 3, "b": 0.0, "c": 1 / 3})
