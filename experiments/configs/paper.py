"""HSFM hyperparameters and reported results, copied from the paper (ECCV 2026).

Hyperparameters: Table 11 (ResNet-50), Table 12 (ViT-B/16), Table 13 (ConvNeXt). The paper calls
the meta learning rate "Outer learning rate" and uses the inner-loop learning rate for the head's
ERM updates too (Sec. 8.1). Expected numbers (worst-group / average accuracy, %): Table 1
(ResNet-50, mean ± std over 3 seeds), Table 2 (ViT-B/16), Table 4a (ConvNeXt).
"""

# (dataset, backbone) -> (table, hyperparameters)
HYPERPARAMETERS = {
    ("celeba", "resnet50"): (
        "Table 11",
        dict(
            support_per_class=1024,
            inner_steps=10,
            inner_lr=5e-5,
            meta_lr=1e-1,
            meta_steps=5,
            hard_set_size=256,
            epochs=20,
        ),
    ),
    ("waterbirds", "resnet50"): (
        "Table 11",
        dict(
            support_per_class=16,
            inner_steps=15,
            inner_lr=5e-5,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=64,
            epochs=40,
        ),
    ),
    ("metashift", "resnet50"): (
        "Table 11",
        dict(
            support_per_class=32,
            inner_steps=15,
            inner_lr=5e-5,
            meta_lr=1e-2,
            meta_steps=10,
            hard_set_size=64,
            epochs=10,
        ),
    ),
    ("dominoes", "resnet50"): (
        "Table 11",
        dict(
            support_per_class=16,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=256,
            epochs=40,
        ),
    ),
    ("celeba", "vit_b16"): (
        "Table 12",
        dict(
            support_per_class=1024,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=256,
            epochs=50,
        ),
    ),
    ("waterbirds", "vit_b16"): (
        "Table 12",
        dict(
            support_per_class=128,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=32,
            epochs=40,
        ),
    ),
    ("metashift", "vit_b16"): (
        "Table 12",
        dict(
            support_per_class=64,
            inner_steps=10,
            inner_lr=1e-5,
            meta_lr=1e-2,
            meta_steps=10,
            hard_set_size=8,
            epochs=30,
        ),
    ),
    ("dominoes", "vit_b16"): (
        "Table 12",
        dict(
            support_per_class=128,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=256,
            epochs=40,
        ),
    ),
    ("celeba", "convnext"): (
        "Table 13",
        dict(
            support_per_class=32,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=8,
            epochs=40,
        ),
    ),
    ("waterbirds", "convnext"): (
        "Table 13",
        dict(
            support_per_class=128,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=16,
            epochs=40,
        ),
    ),
    # The paper gives no HSFM hyperparameters for its CLIP ViT-H/14 rows (Table 4b). These are our
    # choice: Table 12's ViT-B/16 values; for CelebA* (100 val examples per group) Khard and the
    # support size are reduced so that every class has enough examples.
    ("waterbirds", "clip"): (
        "none for CLIP (Table 12 ViT-B/16 values used)",
        dict(
            support_per_class=128,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=32,
            epochs=40,
        ),
    ),
    ("celeba_star", "clip"): (
        "none for CLIP (Table 12 ViT-B/16 values, Khard 64, support 128)",
        dict(
            support_per_class=128,
            inner_steps=10,
            inner_lr=1e-4,
            meta_lr=1.0,
            meta_steps=15,
            hard_set_size=64,
            epochs=50,
        ),
    ),
}

# (dataset, backbone) -> (table, {method: (worst-group %, average %)})
REPORTED = {
    ("waterbirds", "resnet50"): (
        "Table 1",
        {
            "erm": (74.6, 90.21),
            "hsfm": ("93.1 ± 0.1", "94.0 ± 0.5"),
            "dfr": ("92.3 ± 0.2", "93.3 ± 0.5"),
        },
    ),
    ("celeba", "resnet50"): (
        "Table 1",
        {
            "erm": (30.6, 95.83),
            "hsfm": ("89.2 ± 0.2", "90.6 ± 0.5"),
            "dfr": ("88.3 ± 1.1", "91.3 ± 0.3"),
        },
    ),
    ("metashift", "resnet50"): (
        "Table 1",
        {
            "erm": (64.1, 75.65),
            "hsfm": ("77.2 ± 0.1", "77.4 ± 0.0"),
            "dfr": ("72.8 ± 0.6", "77.5 ± 0.6"),
        },
    ),
    ("dominoes", "resnet50"): (
        "Table 1",
        {
            "erm": (78.6, 88.83),
            "hsfm": ("90.4 ± 0.3", "92.9 ± 0.2"),
            "dfr": ("90.0 ± 0.4", "92.3 ± 0.2"),
        },
    ),
    ("waterbirds", "vit_b16"): ("Table 2", {"erm": (53.9, 75.37), "hsfm": (81.5, 83.02)}),
    ("celeba", "vit_b16"): ("Table 2", {"erm": (53.3, 95.70), "hsfm": (88.3, 90.44)}),
    ("metashift", "vit_b16"): ("Table 2", {"erm": (69.7, 69.78), "hsfm": (69.9, 70.22)}),
    ("dominoes", "vit_b16"): ("Table 2", {"erm": (46.1, 70.20), "hsfm": (73.3, 75.46)}),
    ("waterbirds", "convnext"): ("Table 4a", {"erm": (82.7, 90.99), "hsfm": (92.6, 92.96)}),
    ("celeba", "convnext"): ("Table 4a", {"erm": (47.2, 96.04), "hsfm": (81.1, 93.82)}),
    ("waterbirds", "clip"): ("Table 4b", {"erm": (68.4, 89.39), "hsfm": (80.5, 94.05)}),
    ("celeba_star", "clip"): ("Table 4b", {"erm": (50.0, 74.50), "hsfm": (81.0, 89.75)}),
}


def paper_config(dataset: str, backbone: str):
    """The base config with the paper's HSFM hyperparameters for (dataset, backbone)."""
    from experiments.configs import common

    table, values = HYPERPARAMETERS[(dataset, backbone)]
    config = common.base_config()
    config.hsfm = common.hsfm_config(**values)
    config.paper = dict(
        hyperparameters=table,
        reported=REPORTED[(dataset, backbone)][0],
        reported_worst_avg=REPORTED[(dataset, backbone)][1],
    )
    return config
