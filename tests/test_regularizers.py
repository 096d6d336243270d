"""The seed regularizers inside the training loop: every defined pair runs, resumes, and runs
under 2-process DDP; the meta step touches only meta parameters; RCL's warm-up is L_r only."""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
import torch
from test_methods import SMALL_HEADS, small_method
from test_pretrain import _interrupt_after_save, tiny_config

from pretrain.checkpoint import load_backbone, load_torch
from pretrain.config import ConfigError, parse_args
from pretrain.regularizers import REGULARIZERS
from pretrain.train import train

REPO = Path(__file__).resolve().parent.parent
PAIRS = [("simclr", "msr"), ("byol", "msr"), ("simclr", "mcr"), ("byol", "mcr"),
         ("barlow_twins", "mcr"), ("simclr", "metamask"), ("barlow_twins", "metamask"),
         ("simclr", "rcl"), ("mocov2", "rcl"), ("byol", "rcl")]
SMALL_REG = {"metamask": {"drr_dim": 16}, "rcl": {"decoder_width": 8}, "msr": {"width": 8}}


def _cfg(method: str, regularizer: str, **args) -> object:
    return dataclasses.make_dataclass("Cfg", ["method", "regularizer_args", "image_size", "stem"])(
        method, {**SMALL_REG.get(regularizer, {}), **args}, 16, "small")


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


@pytest.mark.parametrize("regularizer,method", [("msr", "simclr"), ("mcr", "byol"),
                                                ("metamask", "simclr")])
def test_meta_step_moves_only_the_meta_parameters(regularizer: str, method: str) -> None:
    model = small_method(method)
    reg = REGULARIZERS[regularizer](model, _cfg(method, regularizer))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta_before = [p.detach().clone() for g in reg.meta_optimizer.param_groups
                   for p in g["params"]]
    logs = reg.meta_step(model, _batch(), optimizer, lr=0.1, step=0)
    assert set(logs) == {"meta_inner", "meta_outer"}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # + BN stats
    meta_after = [p for g in reg.meta_optimizer.param_groups for p in g["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(meta_after, meta_before))
    assert all(p.grad is None for p in meta_after)


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
    cfg = tiny_config(tiny_data, tmp_path, "simclr", regularizer="metamask", steps=4,
                      save_every=2, regularizer_args=SMALL_REG["metamask"], optimizer="adam")
    full = train(dataclasses.replace(cfg, name="full"))
    with monkeypatch.context() as patch:
        _interrupt_after_save(patch, at_step=2)
        with pytest.raises(KeyboardInterrupt):
            train(dataclasses.replace(cfg, name="cut"))
    resumed = train(*parse_args(["--resume", str(tmp_path / "cut")]))
    a, b = load_torch(full / "last_state.pt"), load_torch(resumed / "last_state.pt")
    for part in ("method", "regularizer"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)


@pytest.mark.slow
@pytest.mark.parametrize("method,regularizer", [("simclr", "msr"), ("barlow_twins", "mcr"),
                                                ("simclr", "metamask"), ("byol", "rcl")])
def test_regularizers_under_two_process_ddp(tiny_data: Path, tmp_path: Path, method: str,
                                            regularizer: str) -> None:
    port = str(29740 + [p[1] for p in PAIRS].index(regularizer))
    flags = ["--gpus", "2", "--master-port", port, "--method", method,
             "--regularizer", regularizer, "--data", f"colorful_mnist={tiny_data}",
             "--image-size", "16", "--batch-size", "8", "--steps", "2", "--out", str(tmp_path),
             "--name", "ddp", "--device", "cpu"]
    for key, value in {**SMALL_HEADS[method], **SMALL_REG.get(regularizer, {})}.items():
        flag = "--regularizer-arg" if key in SMALL_REG.get(regularizer, {}) else "--method-arg"
        flags += [flag, f"{key}={value}"]
    result = subprocess.run(["bash", str(REPO / "tools" / "pretrain.sh"), *flags],
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    _, meta = load_backbone(tmp_path / "ddp" / "backbone.safetensors")
    assert meta["regularizer"] == regularizer and meta["steps"] == 2
