"""The FairFace-like set, in the official release's layout: ``fairface_label_{train,val}.csv``
(file, age, gender, race, service_test) and ``{train,val}/*.jpg``.

Drawn faces. Race-like = skin tone (easy colour cue); age-like = eye size, face length, wrinkles,
greying hair (subtle shape cues on a continuous latent age, so neighbouring groups overlap);
gender-like = jaw squareness and hair length (overlapping distributions).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pretrain.synthetic.common import SKIN_TONES, write_csv

IMAGES = {"tiny": (40, 20), "default": (4000, 1000)}  # train, val images per size
FACE_SIZE = 64
AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS = ("Male", "Female")
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
         "Middle Eastern")
HAIR_COLOURS = np.array([(25, 20, 18), (70, 45, 30), (120, 85, 50), (200, 170, 110)], np.float32)


def face_image(age: int, gender: int, race: int, rng: np.random.Generator,
               size: int = FACE_SIZE) -> Image.Image:
    """Draw one face at 2x and downsample. See the module docstring for which cue is which."""
    S = 2 * size
    k = S / 128.0  # geometry below is written for a 128 px canvas
    t = (age + rng.uniform(0, 1)) / len(AGE_GROUPS)  # continuous age latent in [0, 1)
    male = gender == 0
    bg = rng.uniform(60, 200) + rng.uniform(-25, 25, 3)
    img = Image.new("RGB", (S, S), tuple(int(c) for c in np.clip(bg, 0, 255)))
    draw = ImageDraw.Draw(img)
    skin = np.clip(SKIN_TONES[race] + rng.normal(0, 6, 3), 0, 255)
    skin_t = tuple(int(c) for c in skin)
    grey = np.clip((t - 0.55) / 0.45, 0, 1) * rng.uniform(0.5, 1.0)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * (1 - grey) + 200 * grey
    hair_t = tuple(int(c) for c in hair)

    cx, cy = (64 + rng.uniform(-4, 4)) * k, (68 + rng.uniform(-4, 4)) * k
    rx = (rng.uniform(25, 30) + 1.5 * (1 if male else -1)) * k
    ry = rx * (1.12 + 0.22 * t + rng.uniform(-0.04, 0.04))  # faces lengthen with age
    long_hair = rng.random() < (0.3 if male else 0.7)
    jaw = float(np.clip(rng.normal(0.65 if male else 0.35, 0.2), 0, 1))  # squareness
    if long_hair:
        draw.rectangle([cx - rx * 1.2, cy - ry * 0.6, cx + rx * 1.2, cy + ry * 1.25], fill=hair_t)
    draw.ellipse([cx - rx * 1.12, cy - ry * 1.2, cx + rx * 1.12, cy + ry * 0.2], fill=hair_t)
    draw.ellipse([cx - rx, cy - ry * 0.95, cx + rx, cy + ry], fill=skin_t)
    if jaw > 0.05:  # a square jaw: a skin block over the lower face, as wide as the jaw is square
        jw = rx * (0.55 + 0.4 * jaw)
        draw.rounded_rectangle([cx - jw, cy, cx + jw, cy + ry * (0.8 + 0.12 * jaw)],
                               radius=max(1.0, (1 - jaw) * 12 * k), fill=skin_t)
    dark = tuple(int(c) for c in skin * 0.72)
    # wrinkles: forehead lines and crow's feet appear and deepen with age
    n_lines = int(np.clip((t - 0.35) / 0.65 * 4 + rng.uniform(-0.5, 0.5), 0, 4))
    for j in range(n_lines):
        yy = cy - ry * (0.55 - 0.09 * j)
        draw.line([cx - rx * 0.45, yy, cx + rx * 0.45, yy], fill=dark, width=max(1, int(k)))
    eye_y = cy - ry * 0.12 + ry * 0.12 * (1 - t)  # children's eyes sit lower
    eye_r = (5.5 - 2.8 * t + rng.uniform(-0.4, 0.4)) * k  # and are larger
    for side in (-1, 1):
        ex = cx + side * rx * 0.42
        draw.ellipse([ex - eye_r * 1.3, eye_y - eye_r, ex + eye_r * 1.3, eye_y + eye_r],
                     fill=(245, 245, 240))
        draw.ellipse([ex - eye_r * 0.6, eye_y - eye_r * 0.6, ex + eye_r * 0.6,
                      eye_y + eye_r * 0.6], fill=(40, 30, 25))
        if t > 0.6:
            for dy in (-2, 2):
                draw.line([ex + side * eye_r * 1.5, eye_y, ex + side * eye_r * 2.6,
                           eye_y + dy * k], fill=dark, width=max(1, int(k)))
    draw.line([cx, eye_y + 4 * k, cx - 2 * k, cy + ry * 0.3], fill=dark, width=max(1, int(k)))
    mouth_y = cy + ry * 0.55
    mw = rx * rng.uniform(0.3, 0.45)
    draw.line([cx - mw, mouth_y, cx + mw, mouth_y], fill=tuple(int(c) for c in skin * 0.6),
              width=max(1, int(2 * k)))
    return img.resize((size, size), Image.BOX)


def generate(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Write the official FairFace layout: ``fairface_label_{train,val}.csv`` and images."""
    rng = np.random.default_rng([seed, 2])
    for split, n in (("train", n_train), ("val", n_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            age, gender, race = (int(rng.integers(len(AGE_GROUPS))), int(rng.integers(2)),
                                 int(rng.integers(len(RACES))))
            name = f"{split}/{i + 1}.jpg"
            face_image(age, gender, race, rng).save(out / name, quality=95)
            rows.append((name, AGE_GROUPS[age], GENDERS[gender], RACES[race],
                         str(bool(rng.random() < 0.5))))
        write_csv(out / f"fairface_label_{split}.csv",
                   ("file", "age", "gender", "race", "service_test"), rows)
    return out
