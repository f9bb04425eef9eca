"""Digit dominoes: disjoint sources, balanced val/test, train agreement, determinism."""

import itertools

import numpy as np
import pytest
from PIL import Image

from feature_export import datasets
from feature_export.datasets.digit_dominoes import DigitDominoes, _load_digits


@pytest.fixture(scope="module")
def dominoes():
    return DigitDominoes()


def test_registered(dominoes):
    assert "digit_dominoes" in datasets.names()
    assert isinstance(datasets.get("digit_dominoes", train_copies=1), DigitDominoes)
    assert dominoes.class_names == ["8", "9"]
    assert dominoes.group_names == ["y=8,s=0", "y=8,s=1", "y=9,s=0", "y=9,s=1"]


def test_source_images_disjoint_between_splits(dominoes):
    sources = {}
    for split in dominoes.splits:
        arrays = dominoes.split_arrays(split)
        sources[split] = set(arrays.core_source) | set(arrays.shortcut_source)
        assert set(arrays.core_source).isdisjoint(arrays.shortcut_source)
    for a, b in itertools.combinations(dominoes.splits, 2):
        assert sources[a].isdisjoint(sources[b]), (a, b)


def test_sources_are_the_right_digits(dominoes):
    digits, targets = _load_digits()
    for split in dominoes.splits:
        arrays = dominoes.split_arrays(split)
        np.testing.assert_array_equal(
            targets[arrays.core_source], np.asarray(dominoes.core_classes)[arrays.labels]
        )
        np.testing.assert_array_equal(
            targets[arrays.shortcut_source], np.asarray(dominoes.shortcut_classes)[arrays.shortcuts]
        )
        np.testing.assert_array_equal(arrays.groups, 2 * arrays.labels + arrays.shortcuts)
        clean = arrays.copy == 0
        expected = np.round(
            np.concatenate([digits[arrays.core_source], digits[arrays.shortcut_source]], axis=1)
            * 255
        )
        np.testing.assert_array_equal(arrays.images[clean], expected[clean])


def test_val_test_groups_balanced(dominoes):
    for split in ("val", "test"):
        arrays = dominoes.split_arrays(split)
        counts = np.bincount(arrays.groups, minlength=4)
        assert counts.min() == counts.max() > 20, (split, counts)
        assert np.all(arrays.copy == 0)


@pytest.mark.parametrize("agreement", [0.95, 0.8])
def test_train_agreement_fraction(agreement):
    arrays = DigitDominoes(train_agreement=agreement, train_copies=2).split_arrays("train")
    for label in (0, 1):
        in_class = arrays.labels == label
        fraction = np.mean(arrays.shortcuts[in_class] == label)
        assert abs(fraction - agreement) <= 1 / in_class.sum(), (label, fraction)
    assert np.all(np.bincount(arrays.groups, minlength=4) > 0)


def test_deterministic_given_seed(dominoes):
    again = DigitDominoes(seed=0)
    other = DigitDominoes(seed=1)
    for split in dominoes.splits:
        a, b = dominoes.split_arrays(split), again.split_arrays(split)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.groups, b.groups)
        assert a.ids == b.ids
    assert dominoes.fingerprint() == again.fingerprint()
    assert dominoes.fingerprint() != other.fingerprint()
    assert dominoes.fingerprint() != DigitDominoes(noise_std=0.1).fingerprint()


def test_index_and_images(dominoes):
    index = dominoes.index("train")
    arrays = dominoes.split_arrays("train")
    assert len(set(index.ids)) == len(index.ids) == len(arrays.labels)
    image = dominoes.load_image("train", 7)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (8, 16)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], arrays.images[7])
    assert arrays.images.shape == (len(index.ids), 16, 8) and arrays.images.dtype == np.uint8
    with pytest.raises(ValueError, match="out of range"):
        dominoes.load_image("val", 10_000)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(core_classes=(1, 7)), "overlap"),
        (dict(core_classes=(3, 3)), "two different digits"),
        (dict(train_agreement=1.5), "train_agreement"),
        (dict(split_fractions=(0.6, 0.3, 0.3)), "split_fractions"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitDominoes(**kwargs)
