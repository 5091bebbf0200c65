"""fp32 verification tolerances: absolute for small logits, relative to the logits' size beyond 1."""

import numpy as np

from edgeprune.convert.verify import compare_logits, logit_tolerance


def test_tolerance_is_absolute_up_to_one_and_relative_beyond():
    small = [np.array([[0.5, -0.2]], dtype=np.float32)]
    large = [np.array([[4.0, -3.5]], dtype=np.float32), np.array([[1.0, 2.0]], dtype=np.float32)]
    assert logit_tolerance(small, 1e-4) == 1e-4
    assert abs(logit_tolerance(large, 1e-4) - 4e-4) < 1e-12


def test_rounding_noise_on_large_logits_passes_and_a_real_error_fails():
    ref = [np.array([[4.0, -3.5], [2.0, -1.0]], dtype=np.float32)]
    noisy = [ref[0] + np.float32(1.4e-4)]
    assert compare_logits("noise", ref, noisy, 1e-4).passed
    wrong = [ref[0] + np.array([[0.0, 0.0], [0.0, 5e-3]], dtype=np.float32)]
    check = compare_logits("error", ref, wrong, 1e-4)
    assert not check.passed and "tolerance 0.0004" in check.detail
    small = [np.array([[0.5, -0.2]], dtype=np.float32)]
    assert not compare_logits("small", small, [small[0] + np.float32(2e-4)], 1e-4).passed
