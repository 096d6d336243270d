"""Pascal VOC's official layout, checked the way detectron2 reads it (datasets/README.md).

    VOCdevkit/VOC2007, VOCdevkit/VOC2012:
        JPEGImages/<id>.jpg   Annotations/<id>.xml   ImageSets/Main/<split>.txt
        SegmentationClass/<id>.png   ImageSets/Segmentation/<split>.txt   (segmentation only)

detectron2's reader (``detectron2.data.datasets.pascal_voc``) and its evaluator
(``PascalVOCDetectionEvaluator``) fail deep inside a run, or score wrongly, on a missing file, a
non-integer box or an unknown class; :func:`validate_detection` and :func:`validate_segmentation`
check every field they read first and raise :class:`VocLayoutError` naming the file, the field
and the fix. Annotation files are parsed only below :data:`MAX_XML_BYTES` (a hostile file cannot
make the parser expand gigabytes).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from pretrain.data.files import DataError

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
IGNORE_LABEL = 255      # VOC's label for object borders and difficult regions
MAX_XML_BYTES = 1 << 20  # a VOC annotation is about 1 kB
# detection: the sets MoCo's protocol trains and tests on; segmentation: VOC 2012's lists
# test_home: the synthetic set's extra VOC2007 test images on their class's home scene (the
# training images' backgrounds), where the shortcut still works; real VOC has no such list
HOME_TEST = "test_home"
DETECTION_SPLITS = {"train": (("2007", "trainval"), ("2012", "trainval")),
                    "test": (("2007", "test"),), HOME_TEST: (("2007", HOME_TEST),)}
# "aug": the augmented training set (SBD's extra labels) as mmsegmentation's
# tools/convert_datasets/voc_aug.py lays it out: SegmentationClassAug/ grey PNGs and
# ImageSets/Segmentation/aug.txt (VOC 2012 train + SBD, minus VOC 2012 val: 10582 images)
SEGMENTATION_SPLITS = {"train": ("2012", "train"), "val": ("2012", "val"), "aug": ("2012", "aug")}
AUG_LABELS = "SegmentationClassAug"
SEE = "see datasets/README.md (Pascal VOC)"


class VocLayoutError(DataError):
    """The VOC layout is missing a file or holds a malformed one; the message names it."""


def devkit(root: str | Path) -> Path:
    """The folder holding ``VOC2007``/``VOC2012``: ``root`` itself or ``root/VOCdevkit`` (or
    ``root/voc/VOCdevkit``, a suite data root)."""
    root = Path(root)
    for candidate in (root, root / "VOCdevkit", root / "voc" / "VOCdevkit"):
        if any((candidate / f"VOC{year}").is_dir() for year in ("2007", "2012")):
            return candidate
    raise VocLayoutError(f"{root}: no VOCdevkit/VOC2007 or VOC2012 folder under it; {SEE}")


def image_ids(year_dir: Path, image_set: str) -> list[str]:
    """The ids listed in ``ImageSets/<image_set>.txt`` (e.g. ``Main/trainval``), in order."""
    path = year_dir / "ImageSets" / f"{image_set}.txt"
    if not path.is_file():
        raise VocLayoutError(f"{path}: image list missing; {SEE}")
    try:
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise VocLayoutError(f"{path}: not UTF-8 text ({err.reason}); one image id a line") from err
    ids = [i for i in ids if i]
    bad = [i for i in ids if len(i.split()) != 1 or "/" in i or i.startswith(".")]
    if bad:
        raise VocLayoutError(f"{path}: {len(bad)} line(s) are not one image id, e.g. {bad[0]!r} "
                             "(ImageSets/Main/<class>_<split>.txt is not an image list)")
    if len(ids) < 2:  # detectron2 reads the list with np.loadtxt, which needs two lines
        raise VocLayoutError(f"{path}: lists {len(ids)} image(s); a split needs at least 2")
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise VocLayoutError(f"{path}: image id {twice} is listed twice")
    return ids


def _int(path: Path, node: ET.Element, field: str) -> int:
    text = node.findtext(field)
    try:
        return int(text or "")
    except ValueError:
        raise VocLayoutError(f"{path}: <{field}> is {text!r}, not an integer (detectron2's "
                             "evaluator reads it with int())") from None


def read_annotation(path: Path) -> tuple[tuple[int, int], list[tuple[str, tuple[int, ...]]]]:
    """(width, height) and the objects ``(class, (xmin, ymin, xmax, ymax))`` of one annotation,
    every field detectron2 reads checked: VOC's 20 class names, integer 1-based boxes inside the
    image, ``pose``, ``truncated`` and ``difficult`` present."""
    if not path.is_file():
        raise VocLayoutError(f"{path}: annotation missing; {SEE}")
    if path.stat().st_size > MAX_XML_BYTES:
        raise VocLayoutError(f"{path}: {path.stat().st_size} bytes, over the "
                             f"{MAX_XML_BYTES} a VOC annotation may hold")
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise VocLayoutError(f"{path}: not valid XML ({err})") from err
    size = tree.find("size")
    if size is None:
        raise VocLayoutError(f"{path}: no <size> (width, height)")
    width, height = _int(path, size, "width"), _int(path, size, "height")
    objects = []
    for number, obj in enumerate(tree.findall("object")):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if name not in VOC_CLASSES:
            raise VocLayoutError(f"{path}: object {number} has class {name!r}, not one of VOC's "
                                 f"20 ({', '.join(VOC_CLASSES)})")
        if obj.find("pose") is None or box is None:
            raise VocLayoutError(f"{path}: object {number} lacks <pose> or <bndbox>")
        _int(path, obj, "truncated"), _int(path, obj, "difficult")
        xmin, ymin, xmax, ymax = (_int(path, box, f) for f in ("xmin", "ymin", "xmax", "ymax"))
        if not 1 <= xmin <= xmax <= width or not 1 <= ymin <= ymax <= height:
            raise VocLayoutError(f"{path}: object {number}'s box ({xmin}, {ymin}, {xmax}, {ymax}) "
                                 f"is not inside the {width} x {height} image (VOC boxes are "
                                 "1-based, xmin <= xmax <= width)")
        objects.append((name, (xmin, ymin, xmax, ymax)))
    return (width, height), objects


def validate_detection(root: str | Path, split: str) -> list[str]:
    """Check ``split`` (``train``: VOC2007 + VOC2012 trainval; ``test``: VOC2007 test;
    :data:`HOME_TEST`) and return the VOC class names its objects use."""
    base, used = devkit(root), set()
    for year, image_set in DETECTION_SPLITS[split]:
        year_dir = base / f"VOC{year}"
        for image_id in image_ids(year_dir, f"Main/{image_set}"):
            _, objects = read_annotation(year_dir / "Annotations" / f"{image_id}.xml")
            used.update(name for name, _ in objects)
            if not (year_dir / "JPEGImages" / f"{image_id}.jpg").is_file():
                raise VocLayoutError(f"{year_dir / 'JPEGImages' / image_id}.jpg: image missing "
                                     f"(listed in ImageSets/Main/{image_set}.txt)")
    return [name for name in VOC_CLASSES if name in used]


def has_home_test(root: str | Path) -> bool:
    """Whether the layout lists :data:`HOME_TEST` (the synthetic set's shortcut test)."""
    return (devkit(root) / "VOC2007" / "ImageSets" / "Main" / f"{HOME_TEST}.txt").is_file()


def detection_classes(root: str | Path) -> list[str]:
    """The classes of a detection run: VOC's order, those the data uses (all 20 on the real
    sets). Each must have an object in the test split, else its AP (and the mean) is undefined."""
    train, test = validate_detection(root, "train"), validate_detection(root, "test")
    classes = [name for name in VOC_CLASSES if name in set(train) | set(test)]
    absent = [name for name in classes if name not in test]
    if absent:
        raise VocLayoutError(f"{devkit(root) / 'VOC2007'}: no object of {', '.join(absent)} in "
                             "the test split, so their AP is undefined; add test images of them")
    return classes


def _image_size(path: Path, what: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:  # the header only
            return img.size
    except FileNotFoundError:
        raise VocLayoutError(f"{path}: {what} missing; {SEE}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise VocLayoutError(f"{path}: cannot be read as an image ({err})") from err


def validate_segmentation(root: str | Path, split: str, labels: str = "SegmentationClass"
                          ) -> list[str]:
    """Check VOC2012 segmentation ``split`` (``train``/``val``/``aug``) with its label folder
    (VOC's palette PNGs, or the augmented set's :data:`AUG_LABELS` grey PNGs): every listed
    image has a JPEG and a label PNG of its size. Returns the ids."""
    year, image_set = SEGMENTATION_SPLITS[split]
    year_dir = devkit(root) / f"VOC{year}"
    ids = image_ids(year_dir, f"Segmentation/{image_set}")
    for image_id in ids:
        image = _image_size(year_dir / "JPEGImages" / f"{image_id}.jpg", "image")
        label_path = year_dir / labels / f"{image_id}.png"
        if _image_size(label_path, "label PNG") != image:
            raise VocLayoutError(f"{label_path}: label of size {_image_size(label_path, '')} for "
                                 f"an image of {image}; labels must match their image pixel "
                                 "for pixel")
    return ids


def segmentation_training_set(root: str | Path) -> tuple[str, str]:
    """(split, label folder) to train on: the augmented set where it is laid out, else VOC
    2012's own train split."""
    year_dir = devkit(root) / "VOC2012"
    if (year_dir / AUG_LABELS).is_dir() and (year_dir / "ImageSets/Segmentation/aug.txt").is_file():
        return "aug", AUG_LABELS
    return "train", "SegmentationClass"


def train_images(root: Path) -> list[Path]:
    """The detection training images (VOC2007 + VOC2012 trainval): pretraining's input."""
    base = devkit(root)
    validate_detection(base, "train")
    return [base / f"VOC{year}" / "JPEGImages" / f"{image_id}.jpg"
            for year, image_set in DETECTION_SPLITS["train"]
            for image_id in image_ids(base / f"VOC{year}", f"Main/{image_set}")]


def check(root: Path) -> Path:
    """Validate detection train and test; the devkit folder."""
    detection_classes(root)
    return devkit(root)
