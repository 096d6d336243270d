"""mmpose's MPII layout, validated up front (mmpose itself fails late and obscurely)."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pretrain.data.files import (
    DataError,
    check_files_exist,
    check_types,
    dataset_dir,
    read_json,
    require,
    require_fields,
)

MPII_NUM_JOINTS = 16


class MpiiLayout(NamedTuple):
    root: Path               # the MPII folder
    sizes: dict[str, int]    # people per split (train, val)


def validate_mpii(root: str | Path) -> MpiiLayout:
    """Check mmpose's MPII layout up front, everything mmpose's ``MpiiDataset`` and its PCKh
    metric will read (mmpose itself fails late and obscurely: an ``assert`` on the head-box file, a
    ``KeyError`` deep in a data-loader worker).

    ``annotations/mpii_{train,val}.json``: non-empty lists of {image, joints (16 x 2, 1-based
    pixels), joints_vis (16), center [x, y], scale (person height / 200, positive)};
    ``annotations/mpii_gt_val.mat`` with ``headboxes_src`` (2, 2, N_val) in the order of
    mpii_val.json; ``images/`` holding every listed image (names are numbers: mmpose reads the id
    from them).
    """
    root = dataset_dir(root, "mpii", "annotations")
    sizes = {split: len(mpii_annotations(root, split)) for split in ("train", "val")}
    mat = root / "annotations" / "mpii_gt_val.mat"
    if not mat.is_file():
        raise DataError(f"{mat}: missing head-box file; PCKh normalizes by head size, which "
                        "comes from 'headboxes_src' in mpii_gt_val.mat (MPII's evaluation file)")
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        boxes = loadmat(mat).get("headboxes_src")
    except (MatReadError, ValueError, OSError, TypeError, EOFError, zlib.error) as e:
        raise DataError(f"{mat}: not a readable MATLAB file ({' '.join(str(e).split())}); "
                        "replace it with MPII's mpii_gt_val.mat") from e
    if boxes is None or boxes.shape != (2, 2, sizes["val"]):
        found = "absent" if boxes is None else f"shape {boxes.shape}"
        raise DataError(f"{mat}: 'headboxes_src' must have shape (2, 2, {sizes['val']}) in the "
                        f"order of mpii_val.json, found {found}")
    return MpiiLayout(root, sizes)


def mpii_annotations(root: Path, split: str) -> list[dict]:
    path = root / "annotations" / f"mpii_{split}.json"
    anns = read_json(path)
    if not isinstance(anns, list) or not anns:
        raise DataError(f"{path}: expected a non-empty list of person annotations")
    for i, ann in enumerate(anns):
        where = f"{path}: entry {i}" + (f" ({ann['image']})" if isinstance(ann, dict)
                                        and "image" in ann else "")
        require_fields(path, ann, ("image", "joints", "joints_vis", "center", "scale"),
                        f"entry {i}")
        check_types(path, ann, {"image": str}, f"entry {i}")
        for key, shape in (("joints", (MPII_NUM_JOINTS, 2)), ("joints_vis", (MPII_NUM_JOINTS,)),
                           ("center", (2,))):
            try:
                value = np.asarray(ann[key], dtype=float)
            except (TypeError, ValueError):
                value = None
            if value is None or value.shape != shape:
                raise DataError(f"{where}: '{key}' must be a numeric array of shape {shape}")
        if isinstance(ann["scale"], bool) or not isinstance(ann["scale"], (int, float)) \
                or ann["scale"] <= 0:
            raise DataError(f"{where}: 'scale' must be a positive number")
        if not str(ann["image"]).split(".")[0].isdigit():
            raise DataError(f"{where}: image name {ann['image']!r} must be a number (mmpose "
                            "reads the image id from it)")
    check_files_exist(require(root / "images", "image folder"), [a["image"] for a in anns],
                       path)
    return anns


