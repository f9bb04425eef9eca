"""Hard-Spurious-ImageNet ("Corner Cases", Fatima et al.): class scores, builder, group layout.

The benchmark pastes the ground-truth box crop of an ImageNet object, resized to 56, 84 or 112
px, onto a 224x224 inpainted background (paper Sec. 4):

- CeO: object at the centre of its own inpainted background  (released folder ``Group_1``)
- CoO: object in the top-right corner, own background         (``Group_2``)
- CeR: object at the centre of another class's background     (``Group_3``)
- CoR: object in the top-right corner, other background       (``Group_4``)

Three sizes x four placements = 12 groups. Group ids, as written to ``groups.npy``, are
``4 * size_index + placement_index`` with sizes (56, 84, 112) and placements (CeO, CoO, CeR,
CoR), so group 0 is CeO_56 and group 11 is CoR_112. Categories (paper Sec. 5): Easy = CeO/CoO
at 84 and 112; Medium = CeO/CoO at 56 and CeR/CoR at 112; Hard = CeR/CoR at 56 and 84.

Modules: `annotations` reads the ILSVRC box annotations, `scores` computes the per-class
centeredness and size scores (Sec. 3, Eqs. 1-2), `build` writes the dataset.
"""

from __future__ import annotations

IMAGE_SIZE = 224
OBJECT_SIZES = (56, 84, 112)
PLACEMENTS = ("CeO", "CoO", "CeR", "CoR")  # index + 1 = the released layout's Group_<k>
CATEGORIES = ("Easy", "Medium", "Hard")
GROUP_NAMES = tuple(f"{p}_{s}" for s in OBJECT_SIZES for p in PLACEMENTS)


def group_id(size: int, placement: str) -> int:
    """The group id in [0, 12) of an object size (56/84/112) and a placement (CeO/CoO/CeR/CoR)."""
    if size not in OBJECT_SIZES:
        raise ValueError(f"object size must be one of {OBJECT_SIZES}, got {size!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    return len(PLACEMENTS) * OBJECT_SIZES.index(size) + PLACEMENTS.index(placement)


def group_size_placement(group: int) -> tuple[int, str]:
    """Inverse of `group_id`."""
    if not 0 <= group < len(GROUP_NAMES):
        raise ValueError(f"group must be in [0, {len(GROUP_NAMES)}), got {group!r}")
    return OBJECT_SIZES[group // len(PLACEMENTS)], PLACEMENTS[group % len(PLACEMENTS)]


def category(size: int, placement: str) -> str:
    """Easy / Medium / Hard of a group (paper Sec. 5)."""
    group_id(size, placement)  # validates
    own_background = placement.endswith("O")
    if own_background:
        return "Medium" if size == 56 else "Easy"
    return "Medium" if size == 112 else "Hard"


GROUP_CATEGORIES: dict[str, list[int]] = {
    name: [g for g in range(len(GROUP_NAMES)) if category(*group_size_placement(g)) == name]
    for name in CATEGORIES
}

# Hard-Spurious-ImageNet-v2 (paper Sec. 4.1). The paper says "10 classes" but lists 11
# backgrounds; all 11 are kept. WordNet ids checked against ILSVRC's LOC_synset_mapping.txt.
V2_BACKGROUND_WNIDS = (
    "n04251144",  # snorkel
    "n02860847",  # bobsled
    "n03733131",  # maypole
    "n03992509",  # potter's wheel
    "n03447447",  # gondola
    "n02817516",  # bearskin
    "n04540053",  # volleyball
    "n02802426",  # basketball
    "n02951358",  # canoe
    "n09288635",  # geyser
    "n12057211",  # yellow lady's slipper
)
V2_FOREGROUND_WNIDS = (
    "n02088632",  # bluetick
    "n01669191",  # box turtle
    "n02085620",  # Chihuahua
    "n02085782",  # Japanese spaniel
    "n02085936",  # Maltese dog
    "n02086240",  # Shih-Tzu
    "n02086646",  # Blenheim spaniel
    "n02086910",  # papillon
    "n02087394",  # Rhodesian ridgeback
    "n02088238",  # basset
)
