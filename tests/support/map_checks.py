"""Comparing attention maps computed in two places (this process and the attention service)."""
from __future__ import annotations

import numpy as np


def assert_same_map(actual, desired, where):
    """Equal up to float rounding. The service's worker thread may run torch with another number of intra-op
    threads than the test's (set per thread), which changes the order of the sums; cells near zero after baseline
    subtraction then differ relatively, so the bound is relative to the map's peak."""
    peak = float(np.abs(desired).max())
    assert peak > 0, where
    np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=1e-4 * peak, err_msg=where)
