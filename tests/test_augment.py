"""The two augmentation paths: batched ops against torchvision, the same parameters and output
distribution as the per-image PIL pipeline, JPEG decoding on the device, the --augment-on flag."""
from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from test_pretrain import _cli_flags, tiny_config
from torch.utils.data import DataLoader, default_collate

from pretrain import device_augment as DA
from pretrain import train as train_module
from pretrain.augment import AugmentSpec, ViewParams, ViewSampler
from pretrain.config import ConfigError, parse_args
from pretrain.data import DataError
from pretrain.device_augment import BatchAugment, InputPipeline, view_major

STD_01 = 0.226  # mean of the normalisation std: normalised units -> [0, 1] units


def _pipeline(augment_on: str, size: int, with_plain: bool = False, decode: str = "cpu",
              data: str = "coco") -> InputPipeline:
    return InputPipeline(AugmentSpec.for_data(data, size), augment_on, with_plain, "cpu",
                         decode=decode)


def _batch(pipeline: InputPipeline, dataset, indices) -> dict[str, torch.Tensor]:
    collate = pipeline.collate or default_collate
    return pipeline.to_device(collate([dataset[i] for i in indices]))


def _images(count: int = 6) -> torch.Tensor:
    """Random images with the hue's edge cases: grays (chroma 0) and ties of the maximum."""
    torch.manual_seed(0)
    x = torch.rand(count, 3, 13, 17)
    x[0] = x[0, :1]
    x[1, 1] = x[1, 0]
    x[2, 2] = x[2, 1]
    return x


@pytest.mark.parametrize("op, reference, low, high", [
    (DA.adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    (DA.adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (DA.adjust_saturation, TF.adjust_saturation, 0.6, 1.4),
    (DA.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_jitter_ops_match_torchvision_per_sample(op, reference, low, high) -> None:
    x = _images()
    factors = torch.linspace(low, high, len(x))
    ours = op(x.clone(), factors.view(-1, 1, 1, 1))
    theirs = torch.stack([reference(image, float(f)) for image, f in zip(x, factors)])
    torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=0)


def test_grayscale_and_blur_match_torchvision_per_sample() -> None:
    x = _images()
    torch.testing.assert_close(DA.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-7, rtol=0)
    sigma = torch.linspace(0.1, 2.0, len(x))
    theirs = torch.stack([TF.gaussian_blur(image, 7, [float(s), float(s)])
                          for image, s in zip(x, sigma)])
    torch.testing.assert_close(DA.gaussian_blur(x, sigma, 7), theirs, atol=1e-6, rtol=0)


def _view_params_of_the_pil_pipeline(monkeypatch: pytest.MonkeyPatch, dataset, indices
                                     ) -> list[tuple]:
    """The parameters the PIL pipeline applied, per view, read off torchvision's functional
    calls: (box, flip, jittered, order, factors, gray, sigma) as :class:`ViewSampler` gives."""
    ops = ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue")
    calls: list[tuple[str, tuple]] = []

    def recording(name: str):
        real = getattr(TF, name)

        def record(img, *args, **kwargs):
            calls.append((name, args))
            return real(img, *args, **kwargs)
        return record

    for name in ("resized_crop", "hflip", "rgb_to_grayscale", "gaussian_blur") + ops:
        monkeypatch.setattr(TF, name, recording(name))
    for index in indices:
        dataset[index]
    views = []
    for name, args in calls:
        if name == "resized_crop":  # each view starts with its crop
            views.append({"box": list(args[:4]), "flip": False, "order": [], "factors":
                          [1.0, 1.0, 1.0, 0.0], "gray": False, "sigma": 0.0})
        elif name == "hflip":
            views[-1]["flip"] = True
        elif name == "rgb_to_grayscale":
            views[-1]["gray"] = True
        elif name == "gaussian_blur":
            views[-1]["sigma"] = args[1][0]
        else:
            views[-1]["order"].append(ops.index(name))
            views[-1]["factors"][ops.index(name)] = args[0]
    return [(v["box"], v["flip"], bool(v["order"]), v["order"] or [0, 1, 2, 3], v["factors"],
             v["gray"], v["sigma"]) for v in views]


def test_both_paths_draw_the_same_parameters(tiny_data: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Under one seed the device path's workers draw exactly the parameters the PIL pipeline
    applies (crop box, flip, jitter or not, jitter order and factors, grayscale, blur sigma)."""
    indices = range(16)
    device = _pipeline("device", 96)
    dataset = device.dataset("coco", str(tiny_data), seed=3)
    dataset.epoch = 2
    drawn = view_major(default_collate([dataset[i][2] for i in indices]))
    pil = _pipeline("cpu", 96).dataset("coco", str(tiny_data), seed=3)
    pil.epoch = 2
    applied = _view_params_of_the_pil_pipeline(monkeypatch, pil, indices)
    # applied is sample-major (view 1, view 2 of each sample); drawn is view-major
    n = len(indices)
    for k, (box, flip, jittered, order, factors, gray, sigma) in enumerate(applied):
        row = (k % 2) * n + k // 2
        assert drawn.box[row].tolist() == box
        assert (bool(drawn.flip[row]), bool(drawn.jitter[row])) == (flip, jittered)
        assert drawn.order[row].tolist() == order
        assert drawn.factors[row].tolist() == pytest.approx(factors, abs=1e-6)
        assert bool(drawn.gray[row]) == gray
        assert float(drawn.sigma[row]) == pytest.approx(sigma, abs=1e-6)
    assert sum(a[2] for a in applied) > 0 and sum(a[6] > 0 for a in applied) > 0


@pytest.mark.parametrize("data, size", [("colorful_mnist", 32), ("coco", 96)])
def test_both_paths_give_the_same_views_per_sample(tiny_data: Path, data: str,
                                                   size: int) -> None:
    """Same seed: the same views up to the PIL pipeline's rounding to 8 bits after every op
    (up to 6 ops, 0.5/255 each, and its 8-bit HSV for the hue): per-sample mean |difference|
    below 0.02 of the [0, 1] range. A wrong flip, crop, op order or factor is far beyond."""
    spec_args = {"with_plain": True, "data": data}
    pil, device = _pipeline("cpu", size, **spec_args), _pipeline("device", size, **spec_args)
    indices = list(range(12))
    a = _batch(pil, pil.dataset(data, str(tiny_data), seed=0), indices)
    b = _batch(device, device.dataset(data, str(tiny_data), seed=0), indices)
    for key in ("x1", "x2"):
        per_sample = (a[key] - b[key]).abs().mean(dim=(1, 2, 3)) * STD_01
        assert per_sample.max() < 0.02, (key, per_sample)
    torch.testing.assert_close(a["plain"], b["plain"])


def _draw(spec: AugmentSpec, count: int) -> ViewParams:
    sampler, image = ViewSampler(spec), Image.new("RGB", (160, 120))
    torch.manual_seed(0)
    return view_major(default_collate([sampler(image) for _ in range(count)]))


def test_parameter_distribution() -> None:
    """Rates within 4.5 binomial standard errors of the spec's probabilities; ranges and the
    crop's area/aspect as RandomResizedCrop defines them; jitter orders uniform."""
    spec = AugmentSpec(image_size=96)
    p = _draw(spec, 2000)

    def near(rate: torch.Tensor, expected: float) -> bool:
        return abs(rate.float().mean().item() - expected) < 4.5 * math.sqrt(
            expected * (1 - expected) / rate.numel())

    assert near(p.flip, 0.5) and near(p.jitter, spec.jitter_p)
    assert near(p.gray, spec.grayscale_p) and near(p.sigma > 0, spec.blur_p)
    jittered = p.factors[p.jitter]
    assert jittered[:, :3].min() >= 0.6 and jittered[:, :3].max() <= 1.4
    assert jittered[:, 3].abs().max() <= 0.1 and jittered[:, 3].std() > 0.05
    assert near(p.order[p.jitter][:, 0] == 3, 0.25)  # hue first in a quarter of the orders
    assert torch.equal(p.order[p.jitter].sort(dim=1).values,
                       torch.arange(4).expand(int(p.jitter.sum()), 4))
    sigma = p.sigma[p.sigma > 0]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and near(sigma < 1.05, 0.5)
    area = (p.box[:, 2] * p.box[:, 3]).float() / (160 * 120)
    aspect = p.box[:, 3].float() / p.box[:, 2]
    assert area.min() > 0.07 and area.max() <= 1.0 and area.std() > 0.2
    assert aspect.min() > 0.7 and aspect.max() < 1.4
    assert (p.box[:, 0] + p.box[:, 2]).max() <= 120 and (p.box[:, 1] + p.box[:, 3]).max() <= 160


def _statistics(views: torch.Tensor) -> torch.Tensor:
    """Per view: channel means, channel stds, mean saturation (max - min channel) in [0, 1]."""
    x = views * torch.tensor(DA.STD).view(1, 3, 1, 1) + torch.tensor(DA.MEAN).view(1, 3, 1, 1)
    saturation = (x.amax(dim=1) - x.amin(dim=1)).mean(dim=(1, 2))
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), saturation[:, None]], dim=1)


def test_both_paths_give_the_same_output_distribution(tiny_data: Path) -> None:
    """Independent draws (seed 0 on the PIL path, seed 1 on the device path) over the same
    images: the mean of each per-view statistic agrees within 4.5 standard errors of the
    difference of two means of n views (the 7 tests together fail a correct pipeline with
    probability below 1e-4). The image mix is the same on both sides, so its share of the
    variance only makes the bound conservative."""
    indices = [i % 16 for i in range(96)]
    stats = []
    for augment_on, seed in (("cpu", 0), ("device", 1)):
        pipeline = _pipeline(augment_on, 96)
        batch = _batch(pipeline, pipeline.dataset("coco", str(tiny_data), seed=seed), indices)
        stats.append(_statistics(torch.cat([batch["x1"], batch["x2"]])))
    a, b = stats
    bound = 4.5 * torch.sqrt(a.var(dim=0) / len(a) + b.var(dim=0) / len(b))
    assert ((a.mean(dim=0) - b.mean(dim=0)).abs() < bound).all(), (a.mean(0), b.mean(0), bound)


def test_each_sample_is_augmented_on_its_own() -> None:
    """A sample's result does not depend on the rest of the batch (per-sample contrast mean,
    blur kernel, factors)."""
    spec = AugmentSpec(image_size=96)
    params = _draw(spec, 8)
    torch.manual_seed(1)
    x = torch.rand(16, 3, 96, 96)
    augment = BatchAugment(spec)
    whole = augment(x.clone(), params)
    for row in range(16):
        alone = augment(x[row:row + 1].clone(), ViewParams(*(f[row:row + 1] for f in params)))
        torch.testing.assert_close(alone[0], whole[row], atol=2e-6, rtol=0)
    assert whole.shape == x.shape and whole.dtype == torch.float32


def test_loader_workers_give_the_same_batches(tiny_data: Path) -> None:
    """Parameters travel through worker processes and the per-sample seed makes the batch the
    same whatever the number of workers."""
    pipeline = _pipeline("device", 32)
    dataset = pipeline.dataset("coco", str(tiny_data), seed=0)
    batches = [pipeline.to_device(next(iter(DataLoader(dataset, batch_size=4, num_workers=w))))
               for w in (0, 2)]
    for key in ("x1", "x2"):
        assert torch.equal(batches[0][key], batches[1][key])


def test_jpeg_decode_on_the_device_path(tiny_data: Path) -> None:
    """decode_jpeg (here device='cpu') + crops on the device give the loader's views up to
    the two decoders' and resizers' rounding."""
    size, indices = 64, list(range(8))
    on_device = _pipeline("device", size, with_plain=True, decode="device")
    in_loader = _pipeline("device", size, with_plain=True, decode="cpu")
    a = _batch(on_device, on_device.dataset("coco", str(tiny_data), seed=0), indices)
    b = _batch(in_loader, in_loader.dataset("coco", str(tiny_data), seed=0), indices)
    assert on_device.decodes_on_device and not in_loader.decodes_on_device
    for key in ("x1", "x2", "plain"):
        assert (a[key] - b[key]).abs().mean() * STD_01 < 0.005, key
    png = _pipeline("device", size, decode="device", data="colorful_mnist")
    png.dataset("colorful_mnist", str(tiny_data), seed=0)
    assert not png.decodes_on_device  # PNGs are decoded by the workers


def test_corrupt_jpeg_is_named(tiny_data: Path, tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    shutil.copytree(tiny_data / "coco", coco)
    images = sorted((coco / "train2017").iterdir())
    data = images[1].read_bytes()
    images[1].write_bytes(data[:len(data) // 2])  # header intact, data cut
    images[2].write_bytes(b"not an image")
    pipeline = _pipeline("device", 32, decode="device")
    dataset = pipeline.dataset("coco", str(coco), seed=0)
    with pytest.raises(DataError, match=f"{images[2]}: cannot read image header"):
        dataset[2]
    with pytest.raises(DataError, match=f"{images[1]}: cannot decode image"):
        _batch(pipeline, dataset, [0, 1])


def test_compile_failure_is_a_clear_error(tiny_data: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def no_compiler(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\ndetails")
        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    flags = _cli_flags(tiny_config(tiny_data, tmp_path, "simclr"))
    assert train_module.main(flags + ["--steps", "1", "--augment-on", "device-compiled"]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "pretrain: error:" in line)
    assert "Traceback" not in err and line.endswith("use --augment-on device")
    assert "--augment-on device-compiled: torch.compile failed on cpu (RuntimeError: " \
           "InvalidCxxCompiler: No working C++ compiler found)" in line
    with pytest.raises(ConfigError, match="--augment-on must be one of"):
        InputPipeline(AugmentSpec(image_size=8), "gpu", False, "cpu")


@pytest.mark.parametrize("augment_on", ["cpu", "device", "device-compiled"])
def test_augment_on_flag_runs(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              augment_on: str) -> None:
    """Each path trains; device-compiled logs its compile time (torch.compile itself takes
    minutes on a CPU, so here it is the identity: this checks the wiring, not the compiler)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    cfg, _ = parse_args(["--augment-on", augment_on])
    assert cfg.augment_on == augment_on
    run = train_module.train(dataclasses.replace(
        tiny_config(tiny_data, tmp_path, "simclr", steps=1), augment_on=augment_on))
    log = (run / "log.txt").read_text()
    assert ("per-image PIL" in log) == (augment_on == "cpu")
    assert (f"batched augmentation on cpu (--augment-on {augment_on})" in log) == (
        augment_on != "cpu")
    assert ("torch.compile of the batched augmentation took" in log) == (
        augment_on == "device-compiled")
