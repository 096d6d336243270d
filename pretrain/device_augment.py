"""Batched augmentation on the training device (``--augment-on device``, the default).

The loader's workers do the per-image work that needs the whole image: decode, cut the two random
resized crops, resize them to the training size (uint8) and draw every view's parameters
(``pretrain.augment.CropViews``). This module applies the rest of the pipeline to the whole batch
as tensor ops on the training device, with each sample's own parameters: horizontal flip, colour
jitter (brightness, contrast, saturation, hue in the sample's random order), grayscale, Gaussian
blur (separable convolution, per-sample sigma) and normalisation. The ops are torchvision's
tensor formulas (``torchvision.transforms.functional``) with a per-sample factor; the parameters
are drawn exactly as the per-image PIL pipeline draws them, so the two paths give the same
augmentation distribution (tests/test_augment.py compares them). No randomness is drawn here:
a batch's views are a function of the parameters the workers drew under the per-sample seed
(seed, epoch, index), so runs stay reproducible and resume exactly.

For JPEG data on a GPU the workers do not decode either (``pretrain.augment.EncodedViews``): the
batch is decoded on the device with ``torchvision.io.decode_jpeg`` (nvjpeg) and the crops are cut
and resized there (:func:`decode_views`). The same code runs on CPU tensors (CI tests it there).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from pretrain.augment import (
    JPEG_EXTENSIONS,
    MEAN,
    STD,
    AugmentSpec,
    CropViews,
    EncodedViews,
    SeededViews,
    TwoViews,
    ViewParams,
    hwc_uint8,
)
from pretrain.config import AUGMENT_ON, ConfigError
from pretrain.data import build_unlabelled, load_rgb

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)
Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# The ops: (N, 3, H, W) float in [0, 1], one factor per sample (shape (N, 1, 1, 1))
# ---------------------------------------------------------------------------------------------
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor | float, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * x + (1.0 - ratio) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, 0.0, factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` turns (torchvision's ``adjust_hue``).

    Hue in sixths as torchvision computes it: (g - b, b - r, r - g) / chroma + (0, 2, 4) for a
    maximum in r, g, b (the first one on ties, as there). Back to RGB with the closed form
    c = V - C clamp(min(k, 4 - k), 0, 1), k = (n + 6 H) mod 6, n = 5, 3, 1 for R, G, B
    (V = max, C = max - min), which needs no per-sector selection.
    """
    maxc, channel = x.max(dim=1)
    chroma = maxc - x.amin(dim=1)
    diff = (x.roll(-1, dims=1) - x.roll(-2, dims=1)).gather(1, channel.unsqueeze(1)).squeeze(1)
    hue6 = diff / torch.where(chroma == 0, 1.0, chroma) + 2.0 * channel + 6.0 * shift.view(-1, 1, 1)
    n = torch.tensor((5.0, 3.0, 1.0), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(hue6.unsqueeze(1) + n, 6.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


JITTER_OPS: tuple[Op, ...] = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(N, kernel_size) normalised 1-D Gaussians (torchvision's ``_get_gaussian_kernel1d``)."""
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, dtype=sigma.dtype, device=sigma.device)
    pdf = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample Gaussian blur as two 1-D depthwise convolutions (reflect padding, as
    torchvision's ``gaussian_blur``; the 2-D kernel there is the outer product of these)."""
    n, c, h, w = x.shape
    kernel = gaussian_kernels(sigma, kernel_size).repeat_interleave(c, dim=0)  # (N*C, k)
    pad = kernel_size // 2
    planes = F.pad(x, (pad, pad, pad, pad), mode="reflect").reshape(1, n * c, h + 2 * pad,
                                                                     w + 2 * pad)
    planes = F.conv2d(planes, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    planes = F.conv2d(planes, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    return planes.view(n, c, h, w)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_float(hwc: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1], contiguous (the ops' broadcasts of
    per-sample factors run slower on channels_last tensors on the CPU)."""
    return hwc.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


class BatchAugment:
    """Flip, colour jitter, grayscale, blur and normalisation of a batch of crops, each sample
    with its own :class:`~pretrain.augment.ViewParams`.

    Which rows an op touches is decided on the CPU from the parameters (they arrive there from
    the loader), so the device never has to report back (no synchronisation); every op runs once
    on exactly the rows that draw it, as the per-image pipeline does. ``compile=True`` fuses the
    element-wise ops with ``torch.compile`` (dynamic shapes: the row counts vary per batch);
    the first call's compile time is kept in ``compile_s``.
    """

    def __init__(self, spec: AugmentSpec, compile: bool = False) -> None:
        self.blur_kernel = spec.blur_kernel
        ops = {"jitter": JITTER_OPS, "grayscale": (grayscale,), "blur": (gaussian_blur,),
               "normalize": (normalize,)}
        if compile:
            ops = {k: tuple(torch.compile(op, dynamic=True) for op in v) for k, v in ops.items()}
        self.jitter_ops = ops["jitter"]
        (self.grayscale,), (self.blur,), (self.normalize,) = (
            ops["grayscale"], ops["blur"], ops["normalize"])
        self.compiled, self.compile_s = compile, None

    def __call__(self, x: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """``x``: (N, 3, S, S) float in [0, 1] on the device; ``params``: (N, ...) on the CPU.
        Returns the normalised views; ``x`` is overwritten."""
        if not self.compiled or self.compile_s is not None:
            return self._apply(x, params)
        started = time.perf_counter()
        try:
            out = self._apply(x, params)
        except Exception as err:  # torch.compile raises many kinds; name the flag, not a trace
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ConfigError(
                f"--augment-on device-compiled: torch.compile failed on {x.device.type} "
                f"({type(err).__name__}: {first_line[:200]}); use --augment-on device") from None
        self.compile_s = time.perf_counter() - started
        return out

    def _apply(self, x: torch.Tensor, params: ViewParams) -> torch.Tensor:
        device = x.device

        def rows(mask: torch.Tensor) -> torch.Tensor:
            return mask.nonzero()[:, 0].to(device, non_blocking=True)

        flip = params.flip.to(device, non_blocking=True).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
        for position in range(4):  # ColorJitter applies its four ops in the sample's order
            for op_index, op in enumerate(self.jitter_ops):
                chosen = params.jitter & (params.order[:, position] == op_index)
                if chosen.any():
                    factor = params.factors[chosen, op_index].to(device, non_blocking=True)
                    index = rows(chosen)
                    x[index] = op(x[index], factor.view(-1, 1, 1, 1))
        if params.gray.any():
            index = rows(params.gray)
            x[index] = self.grayscale(x[index]).expand(-1, 3, -1, -1)
        blurred = params.sigma > 0
        if self.blur_kernel and blurred.any():
            index = rows(blurred)
            sigma = params.sigma[blurred].to(device, non_blocking=True)
            x[index] = self.blur(x[index], sigma, self.blur_kernel)
        return self.normalize(x)


# ---------------------------------------------------------------------------------------------
# Decoding JPEG batches on the device
# ---------------------------------------------------------------------------------------------
def decode_images(encoded: Sequence[torch.Tensor], paths: Sequence[str],
                  device: torch.device) -> list[torch.Tensor]:
    """(3, H, W) uint8 images on ``device``: one batched ``decode_jpeg`` call; if it fails, image
    by image, and an image the device cannot decode (e.g. CMYK on nvjpeg) is decoded by PIL on
    the CPU, which raises :class:`DataError` naming a corrupt file."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            images = []
            for data, path in zip(encoded, paths):
                try:
                    images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(hwc_uint8(load_rgb(Path(path))).permute(2, 0, 1).to(device))
            return images


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, h, w) uint8 -> (3, S, S) float in [0, 1]: bilinear with antialiasing (PIL's filter,
    as the CPU crops), rounded to uint8 levels as PIL's output is."""
    out = F.interpolate(image.unsqueeze(0).float(), size=(size, size), mode="bilinear",
                        antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).div_(255.0)[0]


def decode_views(encoded: Sequence[torch.Tensor], params: ViewParams, paths: Sequence[str],
                 size: int, with_plain: bool, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(2B, 3, S, S) crops (view 1 of every sample, then view 2) and the (B, 3, S, S) plain
    images (or an empty tensor) in [0, 1], from B encoded JPEGs and their (B, 2, ...) params."""
    images = decode_images(encoded, paths, device)
    boxes = params.box.tolist()
    views = torch.stack([_resize(images[b][:, top:top + h, left:left + w], size)
                         for v in range(2) for b in range(len(images))
                         for top, left, h, w in [boxes[b][v]]])
    plain = (torch.stack([_resize(image, size) for image in images]) if with_plain
             else torch.empty(len(images), 0, device=device))
    return views, plain


def collate_encoded(items: list) -> tuple[list[torch.Tensor], ViewParams, list[str]]:
    """Encoded files keep their own lengths (a list); the parameters are stacked."""
    encoded, params, paths = zip(*items)
    return list(encoded), default_collate(list(params)), list(paths)


def view_major(params: ViewParams) -> ViewParams:
    """(B, 2, ...) -> (2B, ...): view 1 of every sample, then view 2 (the order of the crops)."""
    return ViewParams(*(f.transpose(0, 1).reshape(-1, *f.shape[2:]) for f in params))


# ---------------------------------------------------------------------------------------------
# The input pipeline: what the workers return and how a batch reaches the device
# ---------------------------------------------------------------------------------------------
class InputPipeline:
    """The pretraining input for one ``--augment-on`` choice.

    ``dataset(data, root, seed)`` is the seeded data set the loader reads (with
    :attr:`collate`); ``to_device(batch, memory_format)`` turns one loader batch into the
    training step's ``{"x1", "x2", "plain"}`` on the device. ``decode``: ``auto`` decodes JPEG
    data sets on the device when it is a GPU, ``device`` always (also on the CPU, for tests and
    benchmarks), ``cpu`` never.
    """

    def __init__(self, spec: AugmentSpec, augment_on: str, with_plain: bool,
                 device: str | torch.device, decode: str = "auto") -> None:
        if augment_on not in AUGMENT_ON:
            raise ConfigError(f"--augment-on must be one of {', '.join(AUGMENT_ON)}, "
                              f"got {augment_on!r}")
        self.spec, self.augment_on, self.with_plain = spec, augment_on, with_plain
        self.device, self.decode = torch.device(device), decode
        self.augment = (BatchAugment(spec, compile=augment_on == "device-compiled")
                        if augment_on != "cpu" else None)
        self.decodes_on_device = False
        self.collate: Callable | None = None

    def dataset(self, data: str, root: str | None, seed: int) -> SeededViews:
        if self.augment is None:
            return SeededViews(build_unlabelled(data, root, TwoViews(self.spec, self.with_plain)),
                               seed)
        files = build_unlabelled(data, root, CropViews(self.spec, self.with_plain))
        paths = getattr(files, "paths", [])
        all_jpeg = bool(paths) and all(p.suffix.lower() in JPEG_EXTENSIONS for p in paths)
        self.decodes_on_device = all_jpeg and (
            self.decode == "device" or (self.decode == "auto" and self.device.type == "cuda"))
        if not self.decodes_on_device:
            return SeededViews(files, seed)
        self.collate = collate_encoded
        return SeededViews(EncodedViews(paths, self.spec), seed)

    @property
    def compile_s(self) -> float | None:
        """Seconds the first batch took to compile (``device-compiled``, once compiled)."""
        return self.augment.compile_s if self.augment is not None else None

    def describe(self) -> str:
        if self.augment is None:
            return "per-image PIL augmentation in the loader (--augment-on cpu)"
        where = ("decoded on the device" if self.decodes_on_device
                 else "decoded and cropped in the loader")
        return (f"batched augmentation on {self.device.type} (--augment-on {self.augment_on}), "
                f"images {where}")

    def to_device(self, batch, memory_format: torch.memory_format = torch.contiguous_format
                  ) -> dict[str, torch.Tensor]:
        device = self.device
        if self.augment is None:
            x1, x2, plain = batch
            return {k: v.to(device, non_blocking=True, memory_format=memory_format)
                    if v.ndim == 4 else v.to(device)
                    for k, v in (("x1", x1), ("x2", x2), ("plain", plain))}
        if self.decodes_on_device:
            encoded, params, paths = batch
            x, plain = decode_views(encoded, params, paths, self.spec.image_size,
                                    self.with_plain, device)
        else:
            views, plain, params = batch
            views = views.to(device, non_blocking=True)
            x = to_float(views.transpose(0, 1).reshape(-1, *views.shape[2:]))
            plain = to_float(plain.to(device, non_blocking=True)) if plain.ndim == 4 else plain
        x = self.augment(x, view_major(params))
        x1, x2 = x.chunk(2)
        if plain.ndim == 4:
            plain = normalize(plain).contiguous(memory_format=memory_format)
        else:
            plain = plain.to(device)
        return {"x1": x1.contiguous(memory_format=memory_format),
                "x2": x2.contiguous(memory_format=memory_format), "plain": plain}
