"""CLIP text probing and the unCLIP decoding step, with a stub text encoder and a stub pipeline.

No weights exist here: the open_clip text tower and Stable unCLIP are replaced by stubs in the
tests only. The run is fabricated (support edited along the val spurious direction), so the
expected cosines are known.
"""

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import analyze
from feature_export import clip_probe, unclip
from hsfm_jax.data import features as features_lib
from hsfm_jax.data import synthetic
from hsfm_jax.reporting import analysis

D = 12
SPURIOUS = list(range(4, 8))  # synthetic layout: core 0-3, spurious 4-7, noise 8-11


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run dir whose support edits move each class along its val spurious direction."""
    root = tmp_path_factory.mktemp("clip")
    features_dir = root / "features"
    synthetic.write(
        features_dir,
        num_core=4,
        num_spurious=4,
        num_noise=4,
        num_train=300,
        val_per_group=20,
        test_per_group=10,
    )
    data = features_lib.load(features_dir)
    spurious, _ = analysis.spurious_directions(
        data.val.features,
        data.val.labels,
        data.val.groups,
        num_classes=2,
        num_groups=4,
        majority_weights=data.train_group_counts(),
    )
    rng = np.random.default_rng(0)
    seeds, per_class = 2, 3
    indices = np.stack(
        [
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(data.train.labels == c), per_class, replace=False)
                    for c in range(2)
                ]
            )
            for _ in range(seeds)
        ]
    )
    h0 = data.train.features[indices].astype(np.float64)
    labels = data.train.labels[indices]
    scale = 0.5 + rng.random(indices.shape)[..., None]  # different edit sizes per point
    support = h0 + scale * spurious[labels]
    workdir = root / "run"
    workdir.mkdir()
    np.savez(
        workdir / "support.npz",
        support=support.astype(np.float32),
        support_indices=indices,
        run_id="r1",
    )
    run = {"features_dir": str(features_dir), "run_id": "r1"}
    (workdir / "config.json").write_text(json.dumps(run))
    (workdir / "results.json").write_text(json.dumps({**run, "methods": {"hsfm": {}}}))
    history = {"run_id": "r1", "history": {"edit_norm": [[1.0], [1.0]]}}
    (workdir / "history.json").write_text(json.dumps(history))
    return workdir, spurious, scale


def _stub_text_encoder(spurious_direction):
    """'water' prompts -> base + u, 'land' -> base - u (u: a class's spurious direction), else
    a noise dimension: a text tower for which "water - land" names the spurious attribute."""
    u = spurious_direction / np.linalg.norm(spurious_direction)

    def encode(texts):
        out = []
        for t in texts:
            v = np.zeros(D)
            v[0] = 3.0  # a shared component, as real prompt embeddings have
            if "water" in t:
                v = v + u
            elif "land" in t:
                v = v - u
            else:
                v[8 + len(t) % 4] += 1.0
            out.append(v)
        return np.stack(out)

    return encode


def test_prompts_default_per_dataset_and_override():
    assert clip_probe.prompts_for("waterbirds")[0] == (
        "a photo of a bird on water",
        "a photo of a bird on land",
    )
    assert clip_probe.prompts_for("celeba", ["blond | dark"]) == [("blond", "dark")]
    with pytest.raises(ValueError, match="no default prompts"):
        clip_probe.prompts_for("synthetic")
    with pytest.raises(ValueError, match="prompt a\\|prompt b"):
        clip_probe.parse_prompt_pair("only one")


def test_probe_finds_the_spurious_prompt(fake_run):
    workdir, spurious, _ = fake_run
    run = analyze.load_run(workdir)
    pairs = [("a bird on water", "a bird on land"), ("a cat", "a small dog")]
    encoder = _stub_text_encoder(spurious[0])
    result = clip_probe.probe(run, encoder, pairs)
    rows = {(r["class"], r["prompt_a"]): r for r in result["rows"]}
    direction = clip_probe.prompt_directions(encoder, pairs[:1])[0]
    for c in range(2):
        expected = float(clip_probe.cosines(spurious[c], direction[None])[0])
        water = rows[(f"class_{c}", "a bird on water")]
        assert water["cos_edit"]["mean"] == pytest.approx(expected, abs=1e-6)  # edit ∥ spurious
        assert water["cos_spurious_direction"] == pytest.approx(expected, abs=1e-6)
        assert abs(expected) > 0.8  # class 1's minority direction is about -class 0's
        assert abs(rows[(f"class_{c}", "a cat")]["cos_edit"]["mean"]) < 0.3
    assert "cos(mean edit, text)" in clip_probe.markdown(result)
    with pytest.raises(ValueError, match="d=3"):
        clip_probe.probe(run, lambda texts: np.ones((len(texts), 3)), pairs)


def test_clip_probe_cli_needs_local_weights(fake_run, tmp_path, capsys):
    code = clip_probe.main(
        ["--run", str(fake_run[0]), "--weights", str(tmp_path / "none.bin"), "--prompt", "a|b"]
    )
    assert code == 1
    assert (
        capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.bin'}: weights file missing"
    )


class StubPipeline:
    """Records calls; image colour encodes the embedding's first value and the generator seed."""

    def __init__(self, dim=D):
        self.calls = []
        self.image_normalizer = types.SimpleNamespace(mean=torch.zeros(1, dim))
        self.device, self.dtype = "cpu", torch.float32

    def __call__(self, *, prompt, image_embeds, generator, **kwargs):
        seeds = [g.initial_seed() for g in generator]
        self.calls.append(
            {"prompt": prompt, "embeds": image_embeds.clone(), "seeds": seeds, "kwargs": kwargs}
        )
        images = [
            Image.new("RGB", (8, 8), (int(s) % 256, int(abs(e[0]) * 10) % 256, 0))
            for s, e in zip(seeds, image_embeds, strict=True)
        ]
        return types.SimpleNamespace(images=images)


def test_scale_embeddings():
    h0 = np.array([[3.0, 4.0], [0.0, 2.0]])
    h1 = h0 + np.array([[1.0, 0.0], [0.0, 1.0]])
    o, e = unclip.scale_embeddings(h0, h1, edit_scale=2.0)
    np.testing.assert_allclose(e - o, [[2, 0], [0, 2]])
    assert o.dtype == np.float32
    o, e = unclip.scale_embeddings(h0, h1, target_norm=10.0)
    np.testing.assert_allclose(np.linalg.norm(o, axis=1), 10.0, rtol=1e-6)
    np.testing.assert_allclose(e, h1 * np.array([[2.0], [5.0]]), rtol=1e-6)  # one factor a pair


def test_decode_pairs_batches_and_shares_noise():
    pipe = StubPipeline(dim=3)
    original = np.arange(15, dtype=np.float32).reshape(5, 3)
    edited = original + 100
    dec, edit = unclip.decode_pairs(
        pipe, original, edited, batch_size=4, seed=7, num_inference_steps=2
    )
    assert [len(c["seeds"]) for c in pipe.calls] == [4, 4, 2]
    assert sum((c["seeds"] for c in pipe.calls), []) == [7, 7, 8, 8, 9, 9, 10, 10, 11, 11]
    sent = torch.cat([c["embeds"] for c in pipe.calls]).numpy()
    np.testing.assert_array_equal(sent[0::2], original)
    np.testing.assert_array_equal(sent[1::2], edited)
    assert pipe.calls[0]["prompt"] == [""] * 4 and pipe.calls[0]["kwargs"] == {
        "num_inference_steps": 2
    }
    assert len(dec) == len(edit) == 5
    assert dec[1].getpixel((0, 0))[0] == edit[1].getpixel((0, 0))[0] == 8  # same seed per pair
    with pytest.raises(ValueError, match="batch_size"):
        unclip.decode_pairs(pipe, original, edited, batch_size=0)


def test_render_selects_most_edited_points_and_writes_grid(fake_run, tmp_path):
    workdir, _, scale = fake_run
    run = analyze.load_run(workdir)
    pipe = StubPipeline()
    record = unclip.render(
        run, pipe, tmp_path, seed_index=1, points_per_class=1, batch_size=3, edit_scale=2.0
    )
    rows = [p["support_row"] for p in record["points"]]
    sizes = scale[1, :, 0]
    assert rows == [int(np.argmax(sizes[:3])), 3 + int(np.argmax(sizes[3:]))]
    assert [len(c["seeds"]) for c in pipe.calls] == [3, 1]
    with Image.open(tmp_path / "unclip_grid.png") as im:
        assert im.size[0] == 3 * (192 + 8) + 8 and im.size[1] > 2 * 192  # 8-px gaps
    assert json.loads((tmp_path / "unclip.json").read_text())["edit_scale"] == 2.0
    record = unclip.render(run, StubPipeline(), tmp_path, support_rows=[0, 5])
    assert [p["support_row"] for p in record["points"]] == [0, 5]
    with pytest.raises(ValueError, match="out of range"):
        unclip.render(run, StubPipeline(), tmp_path, support_rows=[6])
    with pytest.raises(ValueError, match="1024-d image embeddings"):
        unclip.render(run, StubPipeline(dim=1024), tmp_path)


def test_unclip_cli_without_weights_is_one_line(fake_run, tmp_path, capsys):
    code = unclip.main(["--run", str(fake_run[0]), "--model_dir", str(tmp_path / "sd")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"error: no Stable unCLIP weights in {tmp_path / 'sd'}: place a diffusers"
    )
