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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP_SCALE = {"colorful_mnist": (0.5, 1.0)}
DEFAULT_CROP_SCALE = (0.08, 1.0)
BLUR_MIN_SIZE = 96


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


def view_transform(spec: AugmentSpec) -> T.Compose:
    steps = [T.RandomResizedCrop(spec.image_size, scale=spec.crop_scale, antialias=True),
             T.RandomHorizontalFlip(),
             T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p),
             T.RandomGrayscale(p=spec.grayscale_p)]
    if spec.image_size >= BLUR_MIN_SIZE:
        kernel = 2 * (spec.image_size // 20) + 1  # odd, about 10% of the side
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=spec.blur_p))
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


class SeededViews(Dataset):
    """Wraps a dataset whose transform draws from torch's global RNG: item ``i`` of epoch ``e`` is
    produced under the seed (seed, e, i), in a forked RNG so the caller's state is untouched."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return self.dataset[index]
