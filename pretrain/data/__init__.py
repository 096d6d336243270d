"""Readers for the suite's data layouts (documented in datasets/README.md).

Every reader takes the data set's own folder (e.g. ``.../coco``); passing the folder that holds
all four synthetic sets (``default_root()``) also works, the reader then uses its subfolder.
Every reader validates the layout when constructed and raises :class:`DataError` naming the file
and the problem; a corrupt image raises :class:`DataError` naming the image when it is read.
Items are ``(PIL RGB image or transform(image), labels dict)``.

One job per module: ``files`` (reading a data set's files safely), ``labelled`` (Colorful-MNIST,
FairFace, ImageFolder), ``coco`` (the COCO validator, ICL-MSR's single-object set), ``mpii``
(mmpose's MPII layout), ``voc`` (Pascal VOC's official layout), ``layouts`` (the registry by
data key, pretraining's unlabelled set).
"""
from __future__ import annotations

from pretrain.data.coco import (
    COCO_TYPES,
    ICL_MSR_CATEGORIES,
    CocoObjects,
    coco_files,
    validate_coco,
)
from pretrain.data.files import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, DataError, load_rgb
from pretrain.data.labelled import (
    COLORFUL_MNIST_COLUMNS,
    FAIRFACE_COLUMNS,
    FAIRFACE_LABELS,
    ColorfulMNIST,
    FairFace,
    ImageFolderData,
    Transform,
)
from pretrain.data.layouts import LAYOUTS, Layout, build_unlabelled
from pretrain.data.mpii import MPII_NUM_JOINTS, MpiiLayout, validate_mpii

__all__ = [
    "COCO_TYPES", "COLORFUL_MNIST_COLUMNS", "FAIRFACE_COLUMNS", "FAIRFACE_LABELS",
    "ICL_MSR_CATEGORIES", "IMAGE_EXTENSIONS", "LAYOUTS", "MAX_IMAGE_PIXELS", "MPII_NUM_JOINTS",
    "CocoObjects", "ColorfulMNIST", "DataError", "FairFace", "ImageFolderData", "Layout",
    "MpiiLayout", "Transform", "build_unlabelled", "coco_files", "load_rgb", "validate_coco",
    "validate_mpii",
]
