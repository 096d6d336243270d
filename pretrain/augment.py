"""Two-view augmentations (SimCLR / MoCo v2 / BYOL family) and deterministic per-sample seeding.

Each view: random resized crop, horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with
probability 0.8, grayscale with probability 0.2, and, for images of 96 px and more, Gaussian blur
(kernel about a tenth of the side, sigma 0.1-2) with probability 0.5. The crop scale is set per
data set: (0.08, 1) as in the papers, (0.5, 1) for Colorful-MNIST, where a small crop of a 64 px
image loses the digit (measured when the synthetic set was calibrated).

:class:`TwoViews` returns ``(view1, view2, plain)``: ``plain`` is the un-augmented image resized to
the training size (ICL-MSR's regularizer reads it), or an empty tensor when not requested.

:class:`SeededViews` makes every item's augmentation a function of (seed, epoch, index), so a run
is reproducible whatever the number of DataLoader workers and resumes mid-epoch exactly.

Two ways to run the same augmentation (``--augment-on``):

- ``cpu``: :class:`TwoViews`, the per-image PIL pipeline (torchvision's transforms) in the
  loader's workers.
- ``device`` (default): the workers only decode and cut the crops (:class:`CropViews`, uint8 at
  the training size) and draw every view's parameters (:class:`ViewSampler`) with the same
  torchvision calls in the same order as the PIL pipeline, so under the same seed both paths draw
  the same parameters; ``pretrain.device_augment`` applies flip, jitter, grayscale, blur and
  normalisation to the whole batch on the training device. For JPEG data on a GPU the workers
  do not even decode (:class:`EncodedViews`): the device decodes the batch.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from pretrain.data import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP_SCALE = {"colorful_mnist": (0.5, 1.0)}
DEFAULT_CROP_SCALE = (0.08, 1.0)
BLUR_MIN_SIZE = 96
BLUR_SIGMA = (0.1, 2.0)


@dataclass(frozen=True)
class AugmentSpec:
    image_size: int
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5

    @classmethod
    def for_data(cls, data: str, image_size: int) -> AugmentSpec:
        return cls(image_size=image_size, crop_scale=CROP_SCALE.get(data, DEFAULT_CROP_SCALE))

    @property
    def blur_kernel(self) -> int:
        """Odd, about 10% of the side; 0 below :data:`BLUR_MIN_SIZE` (no blur)."""
        return 2 * (self.image_size // 20) + 1 if self.image_size >= BLUR_MIN_SIZE else 0


def view_transform(spec: AugmentSpec) -> T.Compose:
    steps = [T.RandomResizedCrop(spec.image_size, scale=spec.crop_scale, antialias=True),
             T.RandomHorizontalFlip(),
             T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p),
             T.RandomGrayscale(p=spec.grayscale_p)]
    if spec.blur_kernel:
        steps.append(T.RandomApply([T.GaussianBlur(spec.blur_kernel, sigma=BLUR_SIGMA)],
                                   p=spec.blur_p))
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


class TwoViews:
    """PIL image -> (view1, view2, plain)."""

    def __init__(self, spec: AugmentSpec, with_plain: bool = False) -> None:
        self.view = view_transform(spec)
        self.plain = T.Compose([T.Resize((spec.image_size, spec.image_size), antialias=True),
                                T.ToTensor(), T.Normalize(MEAN, STD)]) if with_plain else None

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        plain = self.plain(image) if self.plain else torch.empty(0)
        return self.view(image), self.view(image), plain


class ViewParams(NamedTuple):
    """Every random choice of one view (a leading dimension per view / sample once stacked).

    ``box``: crop (top, left, height, width) in the source image; ``order``: ColorJitter's
    random order of (brightness, contrast, saturation, hue) = ``factors``' columns; ``sigma``: blur
    sigma, 0 = no blur.
    """

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    gray: torch.Tensor
    sigma: torch.Tensor


NO_JITTER = (1.0, 1.0, 1.0, 0.0)  # identity factors of a view the jitter skips
PARAM_DTYPES = (torch.int64, torch.bool, torch.bool, torch.int64, torch.float32, torch.bool,
                torch.float32)


class ViewSampler:
    """Draws the parameters of the two views of an image from torch's global RNG exactly as
    :func:`view_transform`'s transforms draw them (same calls, same order, same skipped draws),
    so under one seed both ``--augment-on`` paths draw the same parameters."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec
        self.crop = T.RandomResizedCrop(spec.image_size, scale=spec.crop_scale)
        self.jitter = T.ColorJitter(*spec.jitter)

    def view(self, image: Image.Image) -> tuple:
        """One view's parameters as Python values, in :class:`ViewParams`' field order;
        ``image`` only needs its size (a lazily opened file will do)."""
        spec, jitter = self.spec, self.jitter
        box = self.crop.get_params(image, self.crop.scale, self.crop.ratio)
        flip = bool(torch.rand(1) < 0.5)
        order, factors, jittered = (0, 1, 2, 3), NO_JITTER, False
        if not spec.jitter_p < torch.rand(1):  # RandomApply's test
            order, *factors = jitter.get_params(jitter.brightness, jitter.contrast,
                                                jitter.saturation, jitter.hue)
            order, jittered = order.tolist(), True
        gray = bool(torch.rand(1) < spec.grayscale_p)
        sigma = 0.0
        if spec.blur_kernel and not spec.blur_p < torch.rand(1):
            sigma = T.GaussianBlur.get_params(*BLUR_SIGMA)
        return box, flip, jittered, order, factors, gray, sigma

    def __call__(self, image: Image.Image) -> ViewParams:
        """Both views, stacked (view 1 first, as :class:`TwoViews` draws them)."""
        views = zip(self.view(image), self.view(image))
        return ViewParams(*(torch.tensor(values, dtype=dtype)
                            for values, dtype in zip(views, PARAM_DTYPES)))


def hwc_uint8(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a (H, W, 3) uint8 tensor (channels-last: the device permutes it)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())


class CropViews:
    """PIL image -> (views, plain, params): the worker's share of the ``device`` path.

    ``views`` (2, S, S, 3) uint8 are the two random resized crops, cut and resized exactly as
    ``T.RandomResizedCrop`` does on a PIL image; ``plain`` the whole image resized to S (or
    empty); ``params`` the views' :class:`ViewParams` (the rest of the augmentation, left to
    ``pretrain.device_augment.BatchAugment``)."""

    def __init__(self, spec: AugmentSpec, with_plain: bool = False) -> None:
        self.sample, self.with_plain = ViewSampler(spec), with_plain
        self.size = (spec.image_size, spec.image_size)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, ViewParams]:
        params = self.sample(image)
        views = torch.stack([hwc_uint8(image.crop((left, top, left + w, top + h))
                                       .resize(self.size, Image.Resampling.BILINEAR))
                             for top, left, h, w in params.box.tolist()])
        plain = (hwc_uint8(image.resize(self.size, Image.Resampling.BILINEAR))
                 if self.with_plain else torch.empty(0))
        return views, plain, params


JPEG_EXTENSIONS = (".jpg", ".jpeg")


class EncodedViews(Dataset):
    """JPEG files -> (encoded bytes, params, path): the worker's share when the device decodes.

    The worker reads the file and its header (for the size the crop is drawn in) and draws the
    views' parameters; ``pretrain.device_augment.decode_views`` decodes and cuts on the device.
    """

    def __init__(self, paths: list[Path], spec: AugmentSpec) -> None:
        self.paths, self.sample = paths, ViewSampler(spec)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ViewParams, str]:
        path = self.paths[index]
        try:
            data = path.read_bytes()
            header = Image.open(io.BytesIO(data))  # reads the header only
        except FileNotFoundError as e:
            raise DataError(f"{path}: image file is missing") from e
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"{path}: cannot read image header ({e}); the file is corrupt or "
                            "not an image - replace it or re-run the preparation script") from e
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return encoded, self.sample(header), str(path)


class SeededViews(Dataset):
    """Wraps a dataset whose transform draws from torch's global RNG: item ``i`` of epoch ``e`` is
    produced under the seed (seed, e, i), in a forked RNG so the caller's state is untouched."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (the transforms draw from it): torch.manual_seed would also
            # seed CUDA's, which fork_rng(devices=[]) does not restore, and records a stack
            # trace for CUDA's lazy seeding on every item.
            torch.default_generator.manual_seed(
                hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return self.dataset[index]
