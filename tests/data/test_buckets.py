"""Row buckets: the sizes splits are padded to, and the padding rows."""

import numpy as np
import pytest

from hsfm_jax.data import buckets, features


@pytest.mark.parametrize(
    ("n", "rows"),
    [
        (1, 256),
        (256, 256),
        (257, 384),
        (513, 768),
        (708, 768),
        (769, 1024),
        (1025, 1536),
        (2384, 3072),
        (9610, 12288),
        (12288, 12288),
    ],
)
def test_rows_is_the_floor_or_the_next_of_two_sizes_per_octave(n, rows):
    assert buckets.rows(n) == rows


def test_every_bucket_holds_its_rows_with_less_than_half_padding():
    for n in range(buckets.FLOOR + 1, 20_000, 7):
        assert n <= buckets.rows(n) < 1.5 * n
        assert buckets.rows(buckets.rows(n)) == buckets.rows(n)  # a bucket is its own bucket


def test_to_arrays_pads_with_label_and_group_minus_one_and_zero_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y, g = rng.integers(0, 2, 300), rng.integers(0, 4, 300)
    split = features.Split(x, y.astype(np.int32), g.astype(np.int32), row_buckets=True)
    arrays = split.to_arrays()
    assert split.num_rows == 384 and arrays.features.shape == (384, 4)
    np.testing.assert_array_equal(arrays.features[:300], x)
    np.testing.assert_array_equal(arrays.labels[:300], y)
    assert np.all(np.asarray(arrays.features[300:]) == 0)
    assert np.all(np.asarray(arrays.labels[300:]) == -1)
    assert np.all(np.asarray(arrays.groups[300:]) == -1)
    assert int(buckets.count(arrays.labels)) == 300
    plain = features.Split(x, y.astype(np.int32), g.astype(np.int32)).to_arrays()
    assert plain.features.shape == (300, 4)
