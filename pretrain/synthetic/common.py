"""What the synthetic sets share: HSV colours, the ten procedural texture classes (the
backgrounds and scenes the shortcuts live in), skin tones, and writing a label CSV."""
from __future__ import annotations

import colorsys
import csv
import math
from pathlib import Path

import numpy as np

# One skin tone per race-like group of the FairFace-like set: the easy colour cue.
SKIN_TONES = np.array([(236, 200, 178), (92, 60, 44), (198, 146, 108), (240, 212, 158),
                       (184, 136, 92), (142, 96, 68), (214, 170, 128)], np.float32)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)))


def pattern(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) pattern in [0, 1] for background class ``kind`` with random phase/scale."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = min(h, w) / 64.0
    if kind < 4:  # oriented stripes
        theta = math.radians(45 * kind + rng.uniform(-8, 8))
        period = rng.uniform(8, 14) * scale
        proj = x * math.cos(theta) + y * math.sin(theta)
        return 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    if kind == 4:  # checkerboard
        s = rng.uniform(7, 12) * scale
        ox, oy = rng.uniform(0, 2 * s, 2)
        return ((np.floor((x + ox) / s) + np.floor((y + oy) / s)) % 2).astype(np.float32)
    if kind == 5:  # concentric rings
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = np.hypot(x - cx, y - cy)
        return 0.5 + 0.5 * np.sin(2 * np.pi * r / (rng.uniform(7, 12) * scale)
                                  + rng.uniform(0, 2 * np.pi))
    if kind == 6:  # linear gradient
        theta = rng.uniform(0, 2 * np.pi)
        proj = x * math.cos(theta) + y * math.sin(theta)
        return (proj - proj.min()) / (np.ptp(proj) + 1e-6)
    if kind == 7:  # gaussian blobs
        out = np.zeros((h, w), np.float32)
        for _ in range(rng.integers(4, 8)):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sig = rng.uniform(5, 9) * scale
            out += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sig * sig))
        return np.clip(out, 0, 1)
    if kind == 8:  # fine noise
        return rng.random((h, w), dtype=np.float32)
    # polka dots on a jittered grid
    s = rng.uniform(10, 14) * scale
    ox, oy = rng.uniform(0, s, 2)
    dx = (x + ox) % s - s / 2
    dy = (y + oy) % s - s / 2
    return (np.hypot(dx, dy) < s * 0.28).astype(np.float32)


def scene(index: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A full-contrast (h, w, 3) scene texture: pattern ``index`` in hue family ``index``."""
    hue = index / 10 + rng.uniform(-0.03, 0.03)
    sat = rng.uniform(0.3, 0.6)
    c1, c2 = hsv(hue, sat, rng.uniform(0.2, 0.4)), hsv(hue, sat, rng.uniform(0.55, 0.8))
    p = pattern(index, h, w, rng)[..., None]
    return (255 * (c1 * (1 - p) + c2 * p)).astype(np.uint8)


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
