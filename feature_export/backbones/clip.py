"""CLIP image encoders via open_clip (HSFM Sec. 5.3: a linear head on CLIP ViT-H features).

`clip` builds any architecture open_clip knows (`model_name="ViT-H-14"`, "ViT-B-16", ...) and
returns its image tower as a frozen `Backbone`: features are `encode_image` outputs, the image
embedding exactly as the model produces it (not L2-normalised, so an unCLIP decoder can take it).
Preprocessing is the model's own evaluation transform (open_clip's `preprocess_val`), whatever
the dataset's `resize_policy`; it is written to meta.json.

Weights come from a local open_clip checkpoint (`weights=PATH`: `open_clip_pytorch_model.bin`,
`open_clip_model.safetensors`, or a `{"state_dict": ...}` training checkpoint). Only the image
tower (`visual.*` keys) is checked and loaded; a missing or mis-shaped image-tower key is a one-line
error naming the file and the key. No head: CLIP has no classifier for the dataset's classes.
"""

from __future__ import annotations

import os

import torch

from feature_export.backbones.base import Backbone, register
from feature_export.backbones.torchvision_models import file_sha256, load_checked, read_state_dict


@register("clip")
def clip(
    *,
    dataset=None,
    model_name: str = "ViT-H-14",
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    image_size: int | None = None,
    seed: int = 0,
) -> Backbone:
    """An open_clip image encoder (see module docstring). `dataset` is accepted and unused."""
    import open_clip

    del dataset  # CLIP uses its own transform and has no dataset head
    if random_init == (weights is not None):
        raise ValueError("clip: pass exactly one of weights=PATH or random_init=True")
    if model_name not in open_clip.list_models():
        raise ValueError(f"clip: open_clip knows no model {model_name!r}")
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=None, load_weights=False, force_image_size=image_size
    )
    visual = model.visual
    if weights is not None:
        state, _ = read_state_dict(weights)
        visual_state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        load_checked(visual, visual_state, weights, key_prefix="visual.")
        weights_id = f"open_clip:{file_sha256(weights)}"
    else:
        weights_id = f"random_init:{seed}"
    visual = visual.eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    feature_dim = int(getattr(visual, "output_dim", 0) or model.text_projection.shape[-1])
    del model  # only the image tower is kept
    transform_text = " + ".join(repr(t).replace("\n", " ") for t in preprocess.transforms)
    return Backbone(
        name=f"clip_{model_name}",
        module=visual,
        feature_dim=feature_dim,
        transform=preprocess,
        preprocessing=f"open_clip {model_name} preprocess_val: {transform_text}",
        head=None,
        weights_id=weights_id,
    )
