"""Known library warnings that say nothing about the user's run, silenced in one place.

Importing this module (before the engine: the first warning below fires while detectron2 is
imported) adds an ``ignore`` filter for each entry of :data:`KNOWN_WARNINGS`, matched by category,
message start and the module that warns, so any other warning of the same libraries still shows.
Both drivers import it (``transfer/coco_det.py``, ``transfer/mpii_pose.py``).
"""
from __future__ import annotations

import warnings

# (category, message regex (matched at the start), warning module regex, why it is harmless)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str, str], ...] = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit",
     "detectron2 0.6 scripts two helper functions at import time; nothing is scripted in a run"),
    (UserWarning, r'Use the existing "bbox_center" and "bbox_scale"', r"mmpose\.",
     "mmpose's GetBBoxCenterScale on MPII, whose annotations give each person's centre and "
     "scale: it uses them, with the recipe's padding, as intended"),
)


def silence_known_warnings() -> None:
    """Ignore exactly :data:`KNOWN_WARNINGS` (idempotent: ``warnings`` skips a duplicate)."""
    for category, message, module, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


silence_known_warnings()
