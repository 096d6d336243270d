"""The pretraining loop: config, runs of each method, resume equality, kill safety, NaN guard."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from test_methods import SMALL_HEADS
from torch import nn

from pretrain import train as train_module
from pretrain.backbones import arch_of, stem_of
from pretrain.checkpoint import load_backbone, load_torch
from pretrain.config import ConfigError, PretrainConfig, load_yaml, parse_args
from pretrain.methods import METHODS, Regularizer
from pretrain.optim import LARS, warmup_cosine
from pretrain.train import NonFiniteLossError, train

REPO = Path(__file__).resolve().parent.parent


def tiny_config(tiny_data: Path, out: Path, method: str = "simclr", **overrides) -> PretrainConfig:
    return dataclasses.replace(PretrainConfig(
        method=method, data="colorful_mnist", data_root=str(tiny_data), image_size=8,
        batch_size=8, steps=2, method_args=SMALL_HEADS[method], out=str(out / method),
        log_every=1, save_every=1, device="cpu", workers=0), **overrides)


def _cli_flags(cfg: PretrainConfig) -> list[str]:
    args = ["--data", f"{cfg.data}={cfg.data_root}", "--method", cfg.method,
            "--image-size", str(cfg.image_size), "--batch-size", str(cfg.batch_size),
            "--out", cfg.out, "--device", "cpu", "--workers", "0"]
    for key, value in cfg.method_args.items():
        args += ["--method-arg", f"{key}={value}"]
    return args


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("method: byol\nsteps: 7\nlr: 1\nmethod_args: {proj_dim: 32}\n")
    cfg, resume = parse_args(["--config", str(config_file), "--steps", "9",
                              "--data", "coco=/x/coco", "--method-arg", "temperature=0.1"])
    assert (cfg.method, cfg.steps, cfg.lr, cfg.data, cfg.data_root) == ("byol", 9, 1.0, "coco",
                                                                        "/x/coco")
    assert cfg.method_args == {"proj_dim": 32, "temperature": 0.1} and resume is None
    assert parse_args(["--data", "fairface"])[0].data_root is None
    config_file.write_text("methd: byol\n")
    with pytest.raises(ConfigError, match="unknown setting.*methd"):
        load_yaml(config_file)
    config_file.write_text("steps: many\n")
    with pytest.raises(ConfigError, match="'steps' must be int"):
        load_yaml(config_file)
    config_file.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(config_file)


def test_schedule_and_lars() -> None:
    lrs = [warmup_cosine(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5, abs=0.02)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-3
    # LARS: w = [3, 4] (norm 5), g = [0, 1] + wd*w; trust = eta * 5 / |g + wd w|.
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=1.0, weight_decay=0.5, momentum=0.9, eta=0.01)
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])
    opt.step()
    update = torch.tensor([[1.5, 3.0]])
    expected = torch.tensor([[3.0, 4.0]]) - 0.01 * 5 / update.norm() * update
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(b.detach(), torch.tensor([-1.0]))  # 1-D: plain SGD, no decay


@pytest.mark.parametrize("method", list(METHODS))
def test_two_step_run_writes_the_run_folder(tiny_data: Path, tmp_path: Path, method: str) -> None:
    run_dir = train(tiny_config(tiny_data, tmp_path, method))
    for name in ("config.yaml", "log.txt", "last_state.pt", "backbone.safetensors",
                 "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    state_dict, meta = load_backbone(run_dir / "backbone.safetensors")
    assert arch_of(state_dict) == "resnet18" and stem_of(state_dict) == "imagenet"
    assert not any(k.startswith("fc.") for k in state_dict)
    assert (meta["method"], meta["regularizer"], meta["arch"], meta["stem"], meta["steps"],
            meta["seed"]) == (method, "none", "resnet18", "imagenet", 2, 0)
    assert meta["data"] == "colorful_mnist" and meta["epochs"] == pytest.approx(2 / 5)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and math.isfinite(metrics["final_loss"])
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["optimizer"] == METHODS[method].DEFAULTS["optimizer"]
    assert resolved["stem"] == "imagenet" and resolved["out"] == str(run_dir)


def _interrupt_after_save(monkeypatch: pytest.MonkeyPatch, at_step: int) -> None:
    """Simulate a kill right after the checkpoint of ``at_step`` is written."""
    real_save = train_module.save_state

    def save_then_stop(path, state):
        real_save(path, state)
        if state["step"] == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_state", save_then_stop)


@pytest.mark.parametrize("method", ["byol", "mocov2", "simclr+global-rng"])
def test_resume_gives_the_uninterrupted_parameters(tiny_data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   method: str) -> None:
    if method == "simclr+global-rng":  # a loss drawing from torch's global RNG (as masks do)
        method, real_loss = "simclr", METHODS["simclr"].loss
        monkeypatch.setattr(METHODS["simclr"], "loss",
                            lambda self, out: real_loss(self, out) * (1 + 0.1 * torch.rand(())))
    # 6 steps over 5 batches per epoch: the interruption is mid-epoch and the run crosses one.
    cfg = tiny_config(tiny_data, tmp_path, method, steps=6, save_every=3)
    full = train(dataclasses.replace(cfg, out=str(tmp_path / "full")))
    with monkeypatch.context() as patch:
        _interrupt_after_save(patch, at_step=3)
        with pytest.raises(KeyboardInterrupt):
            train(dataclasses.replace(cfg, out=str(tmp_path / "cut")))
    assert load_torch(tmp_path / "cut" / "last_state.pt")["step"] == 3
    resumed_cfg, resume = parse_args(["--resume", str(tmp_path / "cut")])
    resumed = train(resumed_cfg, resume)
    a = load_torch(full / "last_state.pt")
    b = load_torch(resumed / "last_state.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["method"].items():
        assert torch.equal(value, b["method"][key]), key
    assert a["history"] == b["history"]


def test_killed_run_leaves_a_loadable_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_data, tmp_path, "simclr")
    run_dir = Path(cfg.out)
    proc = subprocess.Popen([sys.executable, "-m", "pretrain.train", *_cli_flags(cfg),
                             "--steps", "1000", "--save-every", "1"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            state_file = run_dir / "last_state.pt"
            if state_file.exists() and load_torch(state_file)["step"] >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run wrote no checkpoint within 120 s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    state = load_torch(run_dir / "last_state.pt")
    assert state["step"] >= 2 and "method" in state and "optimizer" in state
    # It continues from there (with a shorter run length given on the command line).
    cfg_resumed, resume = parse_args(["--resume", str(run_dir), "--steps", str(state["step"] + 1)])
    train(cfg_resumed, resume)
    assert load_torch(run_dir / "last_state.pt")["step"] == state["step"] + 1
    assert (run_dir / "backbone.safetensors").is_file()


def test_nan_loss_stops_naming_the_step_and_checkpoint(tiny_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = METHODS["simclr"].loss
    calls = []

    def loss_nan_at_step_3(self, out):
        calls.append(1)
        loss = real_loss(self, out)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(METHODS["simclr"], "loss", loss_nan_at_step_3)
    cfg = tiny_config(tiny_data, tmp_path, "simclr", steps=5)
    state_file = tmp_path / "simclr" / "last_state.pt"
    with pytest.raises(NonFiniteLossError, match=rf"at step 2; last good checkpoint: {state_file}"):
        train(cfg)
    state = load_torch(state_file)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_existing_run_folder_is_not_overwritten(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_data, tmp_path, "simclr", steps=1)
    train(cfg)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train(cfg)


def test_pretrain_sh_help_documents_every_flag() -> None:
    result = subprocess.run(["bash", str(REPO / "tools" / "pretrain.sh"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ["--gpus", "--nnodes", "--config", "--resume"] + [
            "--" + f.name.replace("_", "-").replace("-args", "-arg")
            for f in dataclasses.fields(PretrainConfig)]:
        assert flag in result.stdout, flag


def test_pretrain_sh_runs_and_reports_bad_input(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_data, tmp_path, "simclr")
    script = str(REPO / "tools" / "pretrain.sh")
    ok = subprocess.run(["bash", script, *_cli_flags(cfg), "--steps", "1"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "simclr" / "backbone.safetensors").is_file()
    bad = subprocess.run(["bash", script, "--data", f"colorful_mnist={tmp_path / 'nowhere'}",
                          "--steps", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr


class _DimensionMask(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.sigmoid(self.logits)


class _ToyRegularizer(Regularizer):
    """Uses every hook: plain image, extra loss with a jointly trained branch, a feature mask
    trained only by a bi-level meta step (virtual SGD step through functional_call)."""

    needs_plain = True
    meta_every = 2

    def __init__(self, method, cfg) -> None:
        super().__init__()
        self.feature_mask = _DimensionMask(method.feature_dim)
        self.colour_head = nn.Linear(method.feature_dim, 3)
        self.meta_optimizer = torch.optim.Adam(self.feature_mask.parameters(), lr=0.05)
        self.meta_steps: list[int] = []

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.colour_head.parameters())

    def regularize(self, base_loss, method, batch, out, progress):
        assert batch["plain"].shape == batch["x1"].shape
        extra = F.mse_loss(self.colour_head(out["h1"]), batch["plain"].mean(dim=(2, 3)))
        return base_loss + extra, {"colour": extra.detach()}

    def meta_step(self, method, batch, optimizer, lr, step):
        params = {n: p for n, p in method.named_parameters() if p.requires_grad}
        views = (batch["x1"], batch["x2"])
        inner = torch.func.functional_call(method, params, views,
                                           {"feature_mask": self.feature_mask})["loss"]
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True,
                                    allow_unused=True)
        stepped = {n: p if g is None else p - 10 * g for (n, p), g in zip(params.items(), grads)}
        outer = torch.func.functional_call(method, stepped, views)["loss"]
        self.meta_optimizer.zero_grad()
        outer.backward(inputs=list(self.feature_mask.parameters()))
        self.meta_optimizer.step()
        self.meta_steps.append(step)
        return {"outer": outer.item()}


def test_regularizer_hooks_and_their_state(tiny_data: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[_ToyRegularizer] = []

    def build(cfg, method):
        made.append(_ToyRegularizer(method, cfg))
        return made[-1]

    monkeypatch.setattr(train_module, "build_regularizer", build)
    cfg = tiny_config(tiny_data, tmp_path, "simclr", steps=4, save_every=2)
    full = train(dataclasses.replace(cfg, out=str(tmp_path / "full")))
    toy = made[-1]
    assert toy.meta_steps == [1, 3]
    assert toy.feature_mask.logits.abs().sum() > 0      # moved by the meta step only
    assert toy.colour_head.weight.grad is not None      # trained with the method
    history = json.loads((full / "metrics.json").read_text())["history"]
    assert "colour" in history[0] and "outer" in history[1] and "outer" not in history[0]
    state = load_torch(full / "last_state.pt")
    assert "feature_mask.logits" in state["regularizer"] and state["meta_optimizer"]["state"]

    with monkeypatch.context() as patch:  # interrupted after step 2, then resumed
        _interrupt_after_save(patch, at_step=2)
        with pytest.raises(KeyboardInterrupt):
            train(dataclasses.replace(cfg, out=str(tmp_path / "cut")))
    resumed = train(*parse_args(["--resume", str(tmp_path / "cut")]))
    a, b = state, load_torch(resumed / "last_state.pt")
    for part in ("method", "regularizer"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
