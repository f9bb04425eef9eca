"""Real backbones: parity with a direct torchvision forward pass, weight-file checks, CLIP.

The parity test uses the real ResNet-50 architecture (random weights saved to a state-dict file,
as a user's ImageNet or ERM weights would be) on 3 small images.
"""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from feature_export import backbones
from feature_export.backbones.torchvision_models import IMAGENET_MEAN, IMAGENET_STD
from feature_export.datasets.base import ExportDataset, SplitIndex
from feature_export.export import export_features
from hsfm_jax.data import features

IMAGE_SIZE = 48


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyImages(ExportDataset):
    """Three generated images per split, two classes, no groups."""

    name = "tiny_images"
    class_names = ["a", "b"]
    group_names: list[str] = []

    def __init__(self, resize_policy="resize256_crop224"):
        self.resize_policy = resize_policy
        rng = np.random.default_rng(0)
        self.images = [
            Image.fromarray(rng.integers(0, 255, (40 + 3 * i, 50, 3), np.uint8)) for i in range(3)
        ]

    def index(self, split):
        return SplitIndex([f"{split}/{i}" for i in range(3)], np.array([0, 1, 0]), np.full(3, -1))

    def load_image(self, split, i):
        return self.images[i]


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A plain torchvision ResNet-50 (2 classes, random weights) and its state-dict file."""
    torch.manual_seed(123)
    model = torchvision.models.resnet50(num_classes=2).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet50_erm.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_resnet50_export_equals_direct_torchvision_forward(tmp_path, resnet_file):
    model, path = resnet_file
    dataset = TinyImages()
    backbone = backbones.get("resnet50", dataset=dataset, weights=path, image_size=IMAGE_SIZE)
    assert backbone.feature_dim == 2048 and backbone.weights_id.startswith("torchvision:")
    export_features(dataset, backbone, tmp_path / "out", batch_size=2, show_progress=False)
    loaded = features.load(tmp_path / "out")

    resize = round(IMAGE_SIZE * 256 / 224)
    reference = transforms.Compose(
        [
            transforms.Resize((resize, resize)),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    trunk = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.Flatten())
    with torch.no_grad():
        expected = trunk(torch.stack([reference(im) for im in dataset.images])).numpy()
        logits = model(torch.stack([reference(im) for im in dataset.images])).numpy()
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(loaded[split].features, expected, rtol=1e-4, atol=1e-5)
    # head.npz is the checkpoint's own fc: features @ W.T + b reproduces its logits.
    np.testing.assert_allclose(loaded.head_weight, model.fc.weight.detach().numpy())
    np.testing.assert_allclose(
        loaded.train.features @ loaded.head_weight.T + loaded.head_bias, logits, atol=1e-4
    )
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert "CenterCrop(48)" in meta["preprocessing"] and "Normalize" in meta["preprocessing"]


def test_weight_file_errors_name_file_and_key(tmp_path, resnet_file):
    _, path = resnet_file
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=f"{missing}: weights file missing"):
        backbones.get("resnet50", weights=missing)
    state = torch.load(path, weights_only=True)
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:8]
    state["extra.bias"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, bad)
    with pytest.raises(
        ValueError, match=r"bad\.pth: .*first mismatched key 'layer1\.0\.conv1\.weight'"
    ):
        backbones.get("resnet50", weights=bad)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pth: unreadable weights file"):
        backbones.get("resnet50", weights=tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="exactly one of"):
        backbones.get("resnet50")


def test_imagenet_classifier_is_not_a_head_and_resize_policy(resnet_file):
    dataset = TinyImages(resize_policy="resize224")
    backbone = backbones.get("resnet50", dataset=dataset, random_init=True, image_size=32)
    assert backbone.head[0].shape == (2, 2048)  # random init: a fresh C-way head
    assert backbone.preprocessing.startswith("Resize((32, 32)) (bilinear)")
    assert "CenterCrop" not in backbone.preprocessing
    assert backbone.transform(dataset.images[1]).shape == (3, 32, 32)


def test_vit_and_convnext_features():
    image = TinyImages().images[0]
    for name, dim in (("vit_b_16", 768), ("convnext_tiny", 768)):
        backbone = backbones.get(name, random_init=True, num_classes=3, image_size=32)
        with torch.no_grad():
            out = backbone.module(backbone.transform(image)[None])
        assert out.shape == (1, dim) == (1, backbone.feature_dim)
        assert backbone.head[0].shape == (3, dim)
        assert not any(p.requires_grad for p in backbone.module.parameters())


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture registered from a config file (real code path, fast)."""
    config_dir = tmp_path_factory.mktemp("clip_configs")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 1,
            "layers": 1,
        },
    }
    (config_dir / "tiny-test-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(config_dir)
    return "tiny-test-clip"


def test_clip_checkpoint_and_embedding(tmp_path, tiny_clip):
    torch.manual_seed(0)
    model = open_clip.create_model(tiny_clip, pretrained=None, load_weights=False).eval()
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    backbone = backbones.get("clip", model_name=tiny_clip, weights=path)
    assert backbone.feature_dim == 16 and backbone.head is None
    assert "preprocess_val" in backbone.preprocessing
    image = TinyImages().images[0]
    x = backbone.transform(image)[None]
    with torch.no_grad():
        np.testing.assert_allclose(backbone.module(x), model.encode_image(x), atol=1e-5)

    state = model.state_dict()
    del state["visual.proj"]
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match=r"bad\.bin: .*first mismatched key 'visual\.proj'"):
        backbones.get("clip", model_name=tiny_clip, weights=tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="open_clip knows no model 'no-such-model'"):
        backbones.get("clip", model_name="no-such-model", random_init=True)


def test_timm_state_dict_is_recognised(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("convnext_tiny", pretrained=False, num_classes=2).eval()
    path = tmp_path / "timm_convnext_tiny.pth"
    torch.save(model.state_dict(), path)
    backbone = backbones.get("convnext", variant="tiny", weights=path, dataset=TinyImages())
    assert (
        backbone.weights_id.startswith("timm:") and "timm convnext_tiny" in backbone.preprocessing
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(
            backbone.module(x),
            model.forward_head(model.forward_features(x), pre_logits=True),
            atol=1e-5,
        )
    np.testing.assert_allclose(backbone.head[0], model.head.fc.weight.detach().numpy())
