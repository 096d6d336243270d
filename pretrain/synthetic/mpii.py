"""The MPII-like set, in mmpose's MPII layout: ``annotations/mpii_{train,val}.json``,
``annotations/mpii_gt_val.mat`` (``headboxes_src``) and ``images/*.jpg``.

Articulated stick figures with 16 joints in MPII order on cluttered scenes, with joints_vis
(occluders hide some joints), center/scale and head boxes.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pretrain.synthetic.common import SKIN_TONES, scene

IMAGES = {"tiny": (16, 8), "default": (2000, 500)}  # train, val images per size
MPII_SIZE = 128
# The package's former single file, kept in the header so that a seed writes the same bytes.
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by pretrain/synthetic.py".ljust(116)
MPII_JOINTS = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
               "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
               "l_elbow", "l_wrist")
# (parent, child, length as a fraction of body height, mean angle in degrees; 90 = straight down)
_BONES = ((6, 7, 0.30, -90), (7, 8, 0.06, -90), (8, 9, 0.13, -90),
          (7, 12, 0.11, 180), (12, 11, 0.17, 100), (11, 10, 0.15, 95),
          (7, 13, 0.11, 0), (13, 14, 0.17, 80), (14, 15, 0.15, 85),
          (6, 2, 0.06, 180), (2, 1, 0.24, 92), (1, 0, 0.24, 90),
          (6, 3, 0.06, 0), (3, 4, 0.24, 88), (4, 5, 0.24, 90))
_LIMB_SPREAD = {(6, 7): 12, (7, 8): 10, (8, 9): 10, (7, 12): 5, (7, 13): 5,
                (6, 2): 5, (6, 3): 5}  # trunk bones bend little; limbs swing by 50 degrees
_BONE_MEAN = {child: mean for _, child, _, mean in _BONES}


def _figure(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Joint positions (16, 2) of one articulated figure in 0-based pixels, and its height."""
    height = rng.uniform(0.55, 0.8) * size
    joints = np.zeros((16, 2))
    joints[6] = rng.uniform(0.4, 0.6) * size, rng.uniform(0.5, 0.6) * size
    lean = rng.uniform(-15, 15)
    angles: dict[int, float] = {}  # direction of the bone ending at each joint
    for parent, child, length, mean in _BONES:
        spread = _LIMB_SPREAD.get((parent, child), 50)
        if parent in angles:  # a segment swings relative to its parent segment, like a real joint
            angle = angles[parent] + mean - _BONE_MEAN[parent] + rng.uniform(-spread, spread)
        else:
            angle = mean + lean + rng.uniform(-spread, spread)
        angles[child] = angle
        a = math.radians(angle)
        joints[child] = joints[parent] + length * height * np.array([math.cos(a), math.sin(a)])
    return joints, height


def _mpii_image(rng: np.random.Generator, size: int = MPII_SIZE):
    for _ in range(50):  # resample until the whole figure (with its head) fits in the image
        joints, height = _figure(rng, size)
        if joints.min() > 6 and joints.max() < size - 7:
            break
    img = Image.fromarray(scene(int(rng.integers(10)), size, size, rng))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 5)):  # clutter
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(4, 14)
        draw.ellipse([x - r, y - r, x + r, y + r],
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    shirt = tuple(int(c) for c in rng.integers(30, 255, 3))
    trousers = tuple(int(c) for c in rng.integers(30, 255, 3))
    skin = tuple(int(c) for c in SKIN_TONES[rng.integers(len(SKIN_TONES))])
    width = max(2, int(height * 0.05))
    for parent, child, _, _ in _BONES:
        colour = trousers if child in (0, 1, 2, 3, 4, 5) else shirt
        if child in (10, 15):
            colour = skin
        if child in (12, 11, 10, 2, 1, 0):  # right side darker: left/right stay tellable
            colour = tuple(int(c * 0.7) for c in colour)
        draw.line([tuple(joints[parent]), tuple(joints[child])], fill=colour,
                  width=width * (2 if child in (7, 8) else 1))
    head_c = (joints[8] + joints[9]) / 2
    head_r = np.linalg.norm(joints[9] - joints[8]) / 2 + 1
    draw.ellipse([*(head_c - head_r), *(head_c + head_r)], fill=skin, outline=(20, 20, 20))
    nose = head_c + (joints[12] - joints[13]) / (np.linalg.norm(joints[12] - joints[13]) + 1e-6) \
        * head_r * 0.6  # a facing cue
    draw.ellipse([*(nose - 1.5), *(nose + 1.5)], fill=(30, 20, 20))
    vis = np.ones(16, int)
    if rng.random() < 0.3:  # an occluder hides the joints under it
        x, y = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(8, 14)
        draw.rectangle([x - r, y - r, x + r, y + r],
                       fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        vis[(np.abs(joints - [x, y]) < r).all(1)] = 0
    headbox = np.array([head_c - head_r * 1.1, head_c + head_r * 1.1])
    return img, joints, vis, headbox


def generate(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Write mmpose's MPII layout: ``annotations/mpii_{train,val}.json``, ``mpii_gt_val.mat``
    (``headboxes_src`` (2, 2, N) in val order) and ``images/*.jpg``.

    As in the real files, joints and center are 1-based (MATLAB) pixel coordinates and
    ``scale`` = person box height / 200.
    """
    from scipy.io import savemat

    rng = np.random.default_rng([seed, 4])
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    image_id = 0
    for split, n in (("train", n_train), ("val", n_val)):
        anns, headboxes, joints_all, missing = [], [], [], []
        for _ in range(n):
            image_id += 1
            img, joints, vis, headbox = _mpii_image(rng)
            name = f"{image_id:09d}.jpg"
            img.save(out / "images" / name, quality=95)
            lo, hi = joints.min(0), joints.max(0)
            lo[1] = min(lo[1], headbox[0, 1])
            anns.append({"joints_vis": vis.tolist(),
                         "joints": np.round(joints + 1, 2).tolist(),
                         "image": name,
                         "scale": round(float(hi[1] - lo[1]) * 1.05 / 200, 4),
                         "center": np.round((lo + hi) / 2 + 1, 2).tolist()})
            headboxes.append(headbox + 1)
            joints_all.append(joints + 1)
            missing.append(1 - vis)
        (out / "annotations" / f"mpii_{split}.json").write_text(json.dumps(anns))
        if split == "val":
            buffer = io.BytesIO()
            savemat(buffer, {
                "headboxes_src": np.stack(headboxes, 2),  # (2, 2, N): [[x1, y1], [x2, y2]]
                "pos_gt_src": np.stack(joints_all, 2),  # (16, 2, N)
                "jnt_missing": np.stack(missing, 1),  # (16, N)
                "dataset_joints": np.array([[j] for j in MPII_JOINTS], dtype=object)})
            # savemat's 116-byte text header holds the creation time; a fixed one keeps the
            # output byte-identical for a given seed.
            data = MAT_HEADER + buffer.getvalue()[len(MAT_HEADER):]
            (out / "annotations" / "mpii_gt_val.mat").write_bytes(data)
    return out
