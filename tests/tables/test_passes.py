"""featmlp.tables.passes: passes over a table's rows."""

import numpy as np

from featmlp.tables.passes import nonfinite_rows


def test_nonfinite_rows():
    X = np.zeros((10000, 3))
    X[[4, 4097, 9999], [0, 2, 1]] = [np.nan, np.inf, -np.inf]
    assert nonfinite_rows(X).tolist() == [4, 4097, 9999]
    assert nonfinite_rows(np.zeros((0, 3))).tolist() == []
