"""The seed regularizers inside the training loop and on their own production path: every defined
pair runs, resumes, and runs under 2-process DDP; each bi-level regularizer's ``meta_step`` gives
the meta-gradient that finite differences of its objective through the real optimizer's step
give; the meta step touches only meta parameters; RCL's warm-up is L_r only."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_methods import SMALL_HEADS, small_method
from test_pretrain import _interrupt_after_save, tiny_config
from test_virtual_step import real_step
from torch import nn

from pretrain.augment import MEAN, STD
from pretrain.checkpoint import load_backbone, load_torch
from pretrain.config import ConfigError, load_yaml, parse_args
from pretrain.data import ColorfulMNIST
from pretrain.methods import build_method
from pretrain.methods.simclr import nt_xent
from pretrain.optim import LARS
from pretrain.regularizers import REGULARIZERS
from pretrain.regularizers.mcr import SeriesDivergenceError
from pretrain.regularizers.rcl import IMAGENET_SIDES
from pretrain.train import train, training_step

REPO = Path(__file__).resolve().parent.parent
PAIRS = [("simclr", "msr"), ("byol", "msr"), ("simclr", "mcr"), ("byol", "mcr"),
         ("barlow_twins", "mcr"), ("simclr", "metamask"), ("barlow_twins", "metamask"),
         ("mocov2", "rcl"), ("simclr", "rcl"), ("byol", "rcl")]
BILEVEL_PAIRS = [pair for pair in PAIRS if REGULARIZERS[pair[1]].meta_every]
SMALL_REG = {"metamask": {"drr_dim": 16}, "rcl": {"decoder_width": 8}, "msr": {"width": 8}}
TINY_HEADS = {"simclr": {"proj_hidden_dim": 8, "proj_dim": 5},
              "byol": {"proj_hidden_dim": 8, "proj_dim": 5},
              "barlow_twins": {"proj_hidden_dim": 8, "proj_dim": 5}}
TINY_REG = {"msr": {"width": 4, "n_vectors": 2}, "mcr": {}, "metamask": {"drr_dim": 8},
            "rcl": {"decoder_width": 4}}


class TinyBackbone(nn.Module):
    """The parts of a torchvision ResNet that ``stage_outputs`` reads, a few hundred weights:
    8 px images -> (6, 2, 2) res5 map. Smooth (tanh), so finite differences are exact enough."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn1, self.relu, self.maxpool = nn.Identity(), nn.Tanh(), nn.Identity()
        self.layer1, self.layer2, self.layer3 = nn.Identity(), nn.Identity(), nn.Identity()
        self.layer4 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Tanh())


def strip_batch_norm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            strip_batch_norm(child)
    return module


def tiny_pair(method: str, regularizer: str, **args):
    """(method, regularizer) on the tiny backbone in float64, every module as built."""
    torch.manual_seed(0)
    model = build_method(method, TinyBackbone(), 6, **TINY_HEADS[method])
    reg = REGULARIZERS[regularizer](model, _cfg(method, regularizer,
                                                **{**TINY_REG[regularizer], **args}))
    return model.double(), reg.double()


def tiny_batch(n: int = 6, size: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
            for k in ("x1", "x2", "plain")}


def meta_parameters(reg: nn.Module) -> list[torch.Tensor]:
    return [p for g in reg.meta_optimizer.param_groups for p in g["params"]]


def meta_gradient(reg: nn.Module, model: nn.Module, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, step: int = 2) -> list[torch.Tensor]:
    """The gradient the regularizer's own ``meta_step`` applies, read off a plain SGD meta step
    (its update is -lr x gradient); the meta parameters are restored afterwards."""
    reg.bind_optimizer(optimizer)
    params = meta_parameters(reg)
    before = [p.detach().clone() for p in params]
    reg.meta_optimizer = torch.optim.SGD(params, lr=1.0)
    reg.bind_optimizer = lambda optimizer: None  # keep the SGD meta step
    reg.meta_step(model, batch, optimizer, 0.0, step)
    lr = reg.meta_optimizer.param_groups[0]["lr"]  # MetaMask sets its own schedule's
    grads = [(b - p.detach()) / lr for b, p in zip(before, params)]
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    return grads


def _cfg(method: str, regularizer: str, data: str | None = None, data_root: Path | None = None,
         **args) -> object:
    fields = ["method", "regularizer_args", "image_size", "stem", "data", "data_root"]
    return dataclasses.make_dataclass("Cfg", fields)(
        method, {**SMALL_REG.get(regularizer, {}), **args}, 16, "small", data, data_root)


def _batch(n: int = 6, size: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(n, 3, size, size, generator=g) for k in ("x1", "x2", "plain")}


@pytest.mark.slow
@pytest.mark.parametrize("method,regularizer", PAIRS)
def test_every_pair_runs_two_steps(tiny_data: Path, tmp_path: Path, method: str,
                                   regularizer: str) -> None:
    cfg = tiny_config(tiny_data, tmp_path, method, regularizer=regularizer,
                      regularizer_args=SMALL_REG.get(regularizer, {}))
    run = train(cfg)
    state_dict, meta = load_backbone(run / "backbone.safetensors")
    assert meta["regularizer"] == regularizer and meta["steps"] == 2
    history = load_torch(run / "last_state.pt")["history"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    if REGULARIZERS[regularizer].meta_every:
        assert "meta_outer" in history[-1]
    if regularizer == "metamask":  # the official optimizer; the mask saved with the backbone
        config = load_yaml(run / "config.yaml")
        assert (config.optimizer, config.lr * config.batch_size / 256) == ("sgd", 1e-3)
        assert len(meta["feature_mask"]) == state_dict["layer4.1.bn2.weight"].numel()


@pytest.mark.parametrize("regularizer,method", [("msr", "simclr"), ("mcr", "byol"),
                                                ("metamask", "simclr")])
def test_meta_step_moves_only_the_meta_parameters(regularizer: str, method: str) -> None:
    model = small_method(method)
    reg = REGULARIZERS[regularizer](model, _cfg(method, regularizer))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reg.bind_optimizer(optimizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta_before = [p.detach().clone() for g in reg.meta_optimizer.param_groups
                   for p in g["params"]]
    logs = reg.meta_step(model, _batch(), optimizer, lr=0.1, step=0)
    assert {"meta_inner", "meta_outer"} <= set(logs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # + BN stats
    meta_after = [p for g in reg.meta_optimizer.param_groups for p in g["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(meta_after, meta_before))
    assert all(p.grad is None for p in meta_after)


@pytest.mark.parametrize("method,regularizer", BILEVEL_PAIRS)
def test_meta_gradient_matches_finite_differences(method: str, regularizer: str) -> None:
    """The meta-gradient of ``meta_step`` against central differences of the outer loss after a
    real LARS step (on copies) with the inner loss's gradient, along the gradient's own direction
    and a random one. The LARS settings (weights move 10% a step) make the bi-level part of the
    gradient large."""
    model, reg = tiny_pair(method, regularizer)
    params = [p for p in model.parameters() if p.requires_grad] + reg.joint_parameters()
    optimizer = LARS([{"params": [p for p in params if p.ndim > 1]},      # 10% steps
                      {"params": [p for p in params if p.ndim == 1], "lr": 0.02}],
                     lr=2.0, weight_decay=1e-2, momentum=0.9, eta=0.05)
    batch = tiny_batch()
    for step in range(2):  # the optimizer's state holds real steps, as at any meta step
        training_step(model, model, reg, optimizer, batch, step, 0.5, 0.0, amp=False)
    grad = torch.cat([g.flatten() for g in meta_gradient(reg, model, batch, optimizer)])
    params = meta_parameters(reg)
    start = [p.detach().clone() for p in params]

    def objective(shift: torch.Tensor) -> float:
        with torch.no_grad():
            for p, p0, v in zip(params, start, shift.split([p.numel() for p in params])):
                p.copy_(p0 + v.view_as(p))
        inner, outer = reg.meta_objectives(batch, 2)
        views = (batch["x1"], batch["x2"])
        stepped = real_step(model, optimizer,
                            lambda m: inner(m(*views, feature_mask=reg.feature_mask)))
        return outer(stepped(*views, feature_mask=reg.feature_mask)).item()

    directions = [grad / grad.norm(), torch.randn(grad.shape, dtype=grad.dtype,
                                                  generator=torch.Generator().manual_seed(2))]
    h = 1e-5
    numeric = torch.tensor([(objective(h * v / v.norm()) - objective(-h * v / v.norm())) / (2 * h)
                            for v in directions], dtype=grad.dtype)
    analytic = torch.stack([grad @ (v / v.norm()) for v in directions])
    assert (analytic - numeric).norm() / numeric.norm() < 1e-4, (analytic, numeric)


def test_mcr_logs_its_series_radius_and_stops_past_the_bound() -> None:
    model, reg = tiny_pair("simclr", "mcr")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    radius = reg.meta_step(model, tiny_batch(), optimizer, 0.1, 3)["mcr_radius"]
    assert 0 < radius < 1
    reg.max_radius = radius / 2
    with pytest.raises(SeriesDivergenceError, match="at step 3 the coding-length series diverges"):
        reg.meta_step(model, tiny_batch(), optimizer, 0.1, 3)


def test_metamask_defaults_are_the_official_codes_and_the_papers_are_options() -> None:
    model, reg = tiny_pair("simclr", "metamask")
    assert torch.equal(reg.feature_mask.mask(), torch.full((6,), 0.5, dtype=torch.float64))
    group = reg.meta_optimizer.param_groups[0]
    assert type(reg.meta_optimizer) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-3, 0.9, 5e-4)
    batch = tiny_batch()
    out = model(batch["x1"], batch["x2"], feature_mask=reg.feature_mask)
    total, terms = reg.regularize(out["loss"], model, batch, out, 0.0)
    contrast = nt_xent(out["z1"], out["z2"], 0.07)               # not SimCLR's own 0.5
    torch.testing.assert_close(terms["contrast"], contrast.detach())
    torch.testing.assert_close(total, terms["drr"] + 10 * contrast)
    reg.set_schedule(steps_per_epoch=10, total_steps=100)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert reg.meta_step(model, batch, optimizer, 0.1, 50)["mask_lr"] == pytest.approx(5e-4)
    model, paper = tiny_pair("simclr", "metamask", mask="linear", temperature=None, alpha=100,
                             mask_schedule="constant")
    assert torch.equal(paper.feature_mask.mask(), torch.ones(6, dtype=torch.float64))
    out = model(batch["x1"], batch["x2"], feature_mask=paper.feature_mask)
    total, terms = paper.regularize(out["loss"], model, batch, out, 0.0)
    torch.testing.assert_close(total, terms["drr"] + 100 * out["loss"])
    paper.set_schedule(steps_per_epoch=10, total_steps=100)
    assert paper.meta_step(model, batch, optimizer, 0.1, 50)["mask_lr"] == 1e-3
    with pytest.raises(ConfigError, match="mask=soft: choose sigmoid or linear"):
        tiny_pair("simclr", "metamask", mask="soft")


def test_rcl_fills_with_the_data_sets_mean_and_warms_up_per_data_set(tiny_data: Path) -> None:
    model = build_method("simclr", TinyBackbone(), 6, **TINY_HEADS["simclr"])
    reg = REGULARIZERS["rcl"](model, _cfg("simclr", "rcl", "colorful_mnist", tiny_data))
    images = [np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
              for path, _ in ColorfulMNIST(tiny_data, "train").samples]
    mean = np.mean([image.mean(axis=(0, 1)) for image in images], axis=0)
    torch.testing.assert_close(reg.fill, ((torch.tensor(mean) - torch.tensor(MEAN))
                                          / torch.tensor(STD)).float())
    batch = {k: v.float() for k, v in tiny_batch(size=16).items()}
    seen = []
    encode = model.encode
    model.encode = lambda x, backbone=None: (seen.append(x), encode(x, backbone))[1]
    out = model(batch["x1"], batch["x2"])
    reg.regularize(out["loss"], model, batch, out, 0.5)
    masked = (seen[-1] != batch["x1"]).any(dim=1)                  # (n, h, w)
    assert masked.any()
    torch.testing.assert_close(seen[-1].permute(0, 2, 3, 1)[masked],
                               reg.fill.expand(int(masked.sum()), 3))
    assert reg.side == (10 / 64, 16 / 64) and reg.warmup_fraction() == 30 / 200
    reg.set_schedule(steps_per_epoch=10, total_steps=4000)         # 400 epochs: the paper's 30
    assert reg.warmup_fraction() == 30 / 400

    mpii = REGULARIZERS["rcl"](model, _cfg("simclr", "rcl", "mpii", tiny_data))
    assert mpii.side == IMAGENET_SIDES
    mpii.set_schedule(steps_per_epoch=10, total_steps=100)        # 10 epochs: 10/300 of them
    for progress, contrast_weight, recon_weight in ((0.03, 0.0, 1.0), (0.04, 1.0, 10.0)):
        total, terms = mpii.regularize(out["loss"], model, batch, out, progress)
        torch.testing.assert_close(total, contrast_weight * out["loss"]
                                   + recon_weight * terms["recon"])  # the warm-up: L_r alone
    fixed = REGULARIZERS["rcl"](model, _cfg("simclr", "rcl", warmup_epochs=2))
    fixed.set_schedule(steps_per_epoch=10, total_steps=100)
    assert fixed.warmup_fraction() == 0.2 and torch.equal(fixed.fill, torch.zeros(3))


def test_rcl_warm_up_trains_reconstruction_only() -> None:
    model = small_method("simclr")
    reg = REGULARIZERS["rcl"](model, _cfg("simclr", "rcl"))
    batch = _batch()
    for progress, projector_learns in ((0.0, False), (0.5, True)):
        model.zero_grad()
        reg.zero_grad()
        out = model(batch["x1"], batch["x2"])
        loss, terms = reg.regularize(out["loss"], model, batch, out, progress)
        loss.backward()
        projector_grad = sum(p.grad.abs().sum() for p in model.projector.parameters())
        assert (projector_grad > 0) == projector_learns
        assert model.backbone.conv1.weight.grad.abs().sum() > 0
        assert all(p.grad is not None for p in reg.joint_parameters())
        assert {"contrast", "recon"} <= set(terms)


def test_pairs_the_papers_do_not_define_and_unknown_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="msr is defined for --method simclr / byol"):
        REGULARIZERS["msr"](small_method("mocov2"), _cfg("mocov2", "msr"))
    with pytest.raises(ConfigError, match="not an option of rcl"):
        REGULARIZERS["rcl"](small_method("simclr"), _cfg("simclr", "rcl", lamda=3))


@pytest.mark.slow
def test_bilevel_run_resumes_exactly(tiny_data: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # interrupted after step 1, resumed for step 2: its regular and meta steps (every step)
    # start from the restored model, regularizer and both optimizers' states
    cfg = tiny_config(tiny_data, tmp_path, "simclr", regularizer="metamask", steps=2,
                      save_every=1, regularizer_args=SMALL_REG["metamask"], optimizer="adam")
    full = train(dataclasses.replace(cfg, out=str(tmp_path / "full")))
    with monkeypatch.context() as patch:
        _interrupt_after_save(patch, at_step=1)
        with pytest.raises(KeyboardInterrupt):
            train(dataclasses.replace(cfg, out=str(tmp_path / "cut")))
    resumed = train(*parse_args(["--resume", str(tmp_path / "cut")]))
    a, b = load_torch(full / "last_state.pt"), load_torch(resumed / "last_state.pt")
    for part in ("method", "regularizer"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)


@pytest.mark.slow
@pytest.mark.parametrize("method,regularizer", [("simclr", "msr"), ("barlow_twins", "mcr"),
                                                ("simclr", "metamask"), ("mocov2", "rcl")])
def test_regularizers_under_two_process_ddp(tiny_data: Path, tmp_path: Path, method: str,
                                            regularizer: str) -> None:
    """Each pair through torchrun on two gloo ranks: tools/pretrain.sh --gpus 2, and for MSR
    ``ssl-pretrain --gpus 2`` (here ``python -m pretrain.train``), which starts itself under
    torchrun on a free port."""
    flags = ["--gpus", "2", "--method", method,
             "--regularizer", regularizer, "--data", f"colorful_mnist={tiny_data}",
             "--image-size", "16", "--batch-size", "8", "--steps", "2",
             "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    for key, value in {**SMALL_HEADS[method], **SMALL_REG.get(regularizer, {})}.items():
        flag = "--regularizer-arg" if key in SMALL_REG.get(regularizer, {}) else "--method-arg"
        flags += [flag, f"{key}={value}"]
    port = str(29740 + [p[1] for p in PAIRS].index(regularizer))
    command = ([sys.executable, "-m", "pretrain.train", *flags] if regularizer == "msr" else
               ["bash", str(REPO / "tools" / "pretrain.sh"), "--master-port", port, *flags])
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    state_dict, meta = load_backbone(tmp_path / "ddp" / "backbone.safetensors")
    assert meta["regularizer"] == regularizer and meta["steps"] == 2
    assert "layer4.1.conv2.weight" in state_dict
    assert "2 x cpu" in (tmp_path / "ddp" / "log.txt").read_text()  # torchrun's ranks, on gloo
