"""Checkpoints as the libraries people train with write them (issue #20): each file is generated
here with the library's own saving code (timm's CheckpointSaver, a lightly example module saved by
PyTorch Lightning, mmengine's Runner, detectron2's DetectionCheckpointer) or, for libraries that do
not install cleanly (solo-learn, VISSL), laid out byte for byte as their code writes it (the lines
are cited). Every network gets non-default BatchNorm statistics, so a wrong or partial load shows.
Each file is converted to both engines with ``transfer/convert.py``, loaded the way the engine
loads it, and its features are compared with the source model (the library's own module, in
memory). The max abs difference of each is printed: ``pytest tests/test_library_checkpoints.py
-s | grep max-abs-diff``."""
from __future__ import annotations

import argparse
import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import transfer.compat  # noqa: F401,I001  (before detectron2 and mmpose)
from pretrain.backbones import RESNETS, STAGES, stage_outputs
from pretrain.checkpoint import load_pickle_arrays
from pretrain.open_backbone import open_backbone
from transfer import convert

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@dataclass
class LibraryFile:
    """A checkpoint a library wrote, and the network it holds (evaluated as the method does)."""

    path: Path
    arch: str
    network: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # res2..res5 of the source
    rule: str                       # what the converter must say it chose
    flags: list[str] = field(default_factory=list)
    others: dict[str, Callable] = field(default_factory=dict)  # --prefix -> that copy's network


def randomize_norms(module: nn.Module, seed: int) -> nn.Module:
    """Non-default BN statistics and affine parameters (BatchNorm, mmcv's BN, detectron2's
    FrozenBatchNorm), different per seed, so a swapped, dropped or default tensor changes the
    features."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(getattr(m, "running_var", None), torch.Tensor) and m.running_var.dim() == 1:
            n = m.running_var.shape
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return module


def torchvision_stages(model: nn.Module) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """res2..res5 of a torchvision or timm ResNet (timm names the stem's ReLU act1)."""
    model = copy.deepcopy(model).eval()

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        act = getattr(model, "act1", None) or model.relu
        x = model.maxpool(act(model.bn1(model.conv1(x))))
        out = {}
        for stage, layer in zip(STAGES, (model.layer1, model.layer2, model.layer3, model.layer4)):
            x = out[stage] = layer(x)
        return out
    return run


def sequential_stages(model: nn.Sequential) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """res2..res5 of lightly's ``nn.Sequential(*list(resnet.children())[:-1])``."""
    model = copy.deepcopy(model).eval()

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for index, module in enumerate(model):
            x = module(x)
            if 4 <= index <= 7:
                out[STAGES[index - 4]] = x
        return out
    return run


def engine_features(path: Path, engine: str, arch: str) -> dict[str, torch.Tensor]:
    """Load a converted file the way the engine does, built as the file says (detectron2:
    STRIDE_IN_1X1 from its suite_meta, what transfer/coco_det.py sets; mmpose: its style)."""
    if engine == "detectron2":
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.resnet import build_resnet_backbone

        stride = json.loads(load_pickle_arrays(path)["suite_meta"])["stride_in_1x1"]
        net = build_resnet_backbone(convert.detectron2_resnet_cfg(arch, stride),
                                    ShapeSpec(channels=3))
        DetectionCheckpointer(net).load(str(path))
        with torch.no_grad():
            return net.eval()(X)
    from mmpose.models.backbones import ResNet

    style = torch.load(path, weights_only=True)["meta"]["style"]
    net = ResNet(depth=RESNETS[arch].depth, out_indices=(0, 1, 2, 3), style=style,
                 init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    net.init_weights()
    net.eval()
    with torch.no_grad():
        return dict(zip(STAGES, net(X)))


def convert_and_compare(name: str, lib: LibraryFile, tmp: Path, capsys: pytest.CaptureFixture,
                        flags: list[str] | None = None, network: Callable | None = None,
                        engines: tuple[str, ...] = ("detectron2", "mmpose")) -> str:
    """Convert ``lib`` to each engine, load it as the engine does, compare with the source
    network; print the max abs difference on res5 per engine. Returns what convert printed."""
    network = network or lib.network
    with torch.no_grad():
        reference = network(X)
    said = ""
    for engine in engines:
        suffix = ".pkl" if engine == "detectron2" else ".pth"
        out = tmp / f"{name}-{engine}{suffix}"
        code = convert.main([str(lib.path), "--to", engine, "--out", str(out),
                             *(lib.flags if flags is None else flags)])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        said += printed.out
        got = engine_features(out, engine, lib.arch)
        diffs = {s: float((got[s] - reference[s]).abs().max()) for s in STAGES}
        with capsys.disabled():
            print(f"\n[max-abs-diff] {name} -> {engine}: res5 {diffs['res5']:.3g}, worst stage "
                  f"{max(diffs.values()):.3g} (res5 values up to "
                  f"{float(reference['res5'].abs().max()):.3g}); {printed.out.strip()}")
        for stage in STAGES:
            assert diffs[stage] <= 1e-4 * float(reference[stage].abs().max()), (engine, stage)
    return said


# ------------------------------------------------------------------------------------ timm
@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """timm's CheckpointSaver (timm/utils/checkpoint_saver.py, as train.py uses it): last.pth.tar
    holds the training args (an argparse.Namespace), the model, its EMA and the optimizer."""
    timm = pytest.importorskip("timm")
    from timm.utils import CheckpointSaver, ModelEmaV3

    folder = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    model = randomize_norms(timm.create_model("resnet18", num_classes=10), 1)
    ema = ModelEmaV3(model)
    randomize_norms(ema.module, 2)  # as an EMA drifts from the model during training
    args = argparse.Namespace(model="resnet18", lr=0.1, epochs=100, batch_size=256,
                              mean=(0.485, 0.456, 0.406), img_size=None, model_ema=True)
    saver = CheckpointSaver(model, torch.optim.SGD(model.parameters(), lr=0.1), args=args,
                            model_ema=ema, checkpoint_dir=str(folder), recovery_dir=str(folder))
    saver.save_checkpoint(epoch=0, metric=0.5)
    return LibraryFile(folder / "last.pth.tar", "resnet18", torchvision_stages(model),
                       "EMA copy 'state_dict_ema.' not used",
                       others={"state_dict_ema.": torchvision_stages(ema.module)})


# ------------------------------------------------------------------------------------ lightly
class _TwoViews(torch.utils.data.Dataset):
    """lightly's (views, label, filename) items, as its LightlyDataset and collate give them."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple:
        g = torch.Generator().manual_seed(i)
        return [torch.randn(3, 32, 32, generator=g), torch.randn(3, 32, 32, generator=g)], 0, str(i)


def _lightly_and_lightning() -> Any:
    """pytorch_lightning, once lightly is known to be installed (a guard: CI installs both)."""
    pytest.importorskip("lightly")
    return pytest.importorskip("pytorch_lightning")


def _fit_and_save(module: nn.Module, folder: Path) -> Path:
    """Train one step with PyTorch Lightning and keep its ModelCheckpoint file, as lightly's
    examples do (``pl.Trainer(max_epochs=...).fit(model, dataloader)``)."""
    pl = pytest.importorskip("pytorch_lightning")
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", devices=1,
                         default_root_dir=str(folder), logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(_TwoViews(), batch_size=2))
    return next(folder.rglob("*.ckpt"))


@pytest.fixture(scope="module")
def lightly_dino(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """lightly 1.6's examples/pytorch_lightning/dino.py: student_backbone/student_head and a
    deep-copied teacher_backbone/teacher_head, the backbone an nn.Sequential of a torchvision
    ResNet's children; the teacher follows the student by update_momentum."""
    pl = _lightly_and_lightning()
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    class DINO(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            resnet = torchvision.models.resnet18()
            backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.student_backbone = backbone
            self.student_head = DINOProjectionHead(512, 64, 16, 32, freeze_last_layer=1)
            self.teacher_backbone = copy.deepcopy(backbone)
            self.teacher_head = DINOProjectionHead(512, 64, 16, 32)
            deactivate_requires_grad(self.teacher_backbone)
            deactivate_requires_grad(self.teacher_head)
            self.criterion = DINOLoss(output_dim=32, warmup_teacher_temp_epochs=1)

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            update_momentum(self.student_backbone, self.teacher_backbone, m=0.996)
            update_momentum(self.student_head, self.teacher_head, m=0.996)
            views = batch[0]
            teacher = [self.teacher_head(self.teacher_backbone(v).flatten(1)) for v in views]
            student = [self.student_head(self.student_backbone(v).flatten(1)) for v in views]
            return self.criterion(teacher, student, epoch=self.current_epoch)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=0.001)

    torch.manual_seed(0)
    module = DINO()
    randomize_norms(module.student_backbone, 3)
    randomize_norms(module.teacher_backbone, 4)  # the copies part as training goes on
    path = _fit_and_save(module, tmp_path_factory.mktemp("lightly_dino"))
    return LibraryFile(path, "resnet18", sequential_stages(module.teacher_backbone),
                       "the teacher 'state_dict.teacher_backbone.'",
                       others={"state_dict.student_backbone.":
                               sequential_stages(module.student_backbone)})


@pytest.fixture(scope="module")
def lightly_byol(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """lightly 1.6's examples/pytorch_lightning/byol.py: backbone, projection_head,
    prediction_head and the momentum copies backbone_momentum, projection_head_momentum."""
    pl = _lightly_and_lightning()
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    class BYOL(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            resnet = torchvision.models.resnet18()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = BYOLProjectionHead(512, 64, 16)
            self.prediction_head = BYOLPredictionHead(16, 64, 16)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NegativeCosineSimilarity()

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            update_momentum(self.backbone, self.backbone_momentum, m=0.99)
            update_momentum(self.projection_head, self.projection_head_momentum, m=0.99)
            x0, x1 = batch[0]
            p0 = self.prediction_head(self.projection_head(self.backbone(x0).flatten(1)))
            z1 = self.projection_head_momentum(self.backbone_momentum(x1).flatten(1)).detach()
            return self.criterion(p0, z1)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=1e-4)  # one small step

    torch.manual_seed(0)
    module = BYOL()
    randomize_norms(module.backbone, 5)
    randomize_norms(module.backbone_momentum, 6)
    path = _fit_and_save(module, tmp_path_factory.mktemp("lightly_byol"))
    return LibraryFile(path, "resnet18", sequential_stages(module.backbone),
                       "the online encoder 'state_dict.backbone.'")


# ------------------------------------------------------------------------------------ mmengine
def run_one_epoch(folder: Path, backbone: nn.Module, width: int, *, lr: float = 0.0,
                  momentum: float = 0.0, cfg: dict | None = None, **runner_args: Any) -> Any:
    """mmengine 0.10's Runner, one epoch on the CPU over two random images, a linear head on
    ``backbone``'s last stage (``width`` channels), its CheckpointHook writing epoch_1.pth (meta,
    ``cfg`` as ``meta['cfg']``, state_dict, message_hub of HistoryBuffers and numpy scalars,
    optimizer, schedulers). Returns the Runner."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Classifier(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = nn.Linear(width, 3)

        def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None,
                    mode: str = "tensor") -> dict | torch.Tensor:
            logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
            return {"loss": nn.functional.cross_entropy(logits, labels)} if mode == "loss" \
                else logits

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict:
            g = torch.Generator().manual_seed(i)
            return {"inputs": torch.randn(3, 32, 32, generator=g), "labels": torch.tensor(i)}

    runner = Runner(
        model=Classifier(), work_dir=str(folder), default_scope="mmengine", log_level="ERROR",
        train_dataloader=dict(dataset=Images(), batch_size=2, collate_fn=dict(
            type="default_collate"), sampler=dict(type="DefaultSampler", shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=lr, momentum=momentum)),
        train_cfg=dict(by_epoch=True, max_epochs=1), cfg=cfg,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)), **runner_args)
    runner.train()
    return runner


@pytest.fixture(scope="module")
def mmengine_file(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """mmengine 0.10's Runner, one epoch on the CPU, its CheckpointHook writing epoch_1.pth
    (meta, state_dict, message_hub of HistoryBuffers and numpy scalars, optimizer, schedulers)
    for a model whose backbone is mmpretrain's ResNet layout (mmpose's copy of it)."""
    from mmpose.models.backbones import ResNet

    folder = tmp_path_factory.mktemp("mmengine")
    torch.manual_seed(0)
    resnet = ResNet(depth=18, out_indices=(0, 1, 2, 3))
    resnet.init_weights()  # zeroes each block's last BN; the Runner then skips it
    randomize_norms(resnet, 7)
    runner = run_one_epoch(folder, resnet, 512, lr=1e-4, momentum=0.9,
                           param_scheduler=dict(type="MultiStepLR", milestones=[1],
                                                by_epoch=True))
    backbone = copy.deepcopy(runner.model.backbone)
    backbone.eval()  # mmcv-style train() returns None: no chaining

    def network(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(STAGES, backbone(x)))
    return LibraryFile(folder / "epoch_1.pth", "resnet18", network,
                       "'state_dict.backbone.', the only copy")


# ------------------------------------------------------------------------------------ detectron2
@pytest.fixture(scope="module")
def detectron2_file(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """lightly's detectron2 tutorial (docs/source/tutorials_source/package/
    tutorial_pretrain_detectron2.py): a model built from a default config (so
    MODEL.RESNETS.STRIDE_IN_1X1 True, FrozenBN) saved with ``DetectionCheckpointer(detmodel,
    save_dir).save(name)``; the ResNet is ``backbone.bottom_up``. Nothing in the file says the
    convention, so it converts only with ``--stride-in-1x1 true``."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

    folder = tmp_path_factory.mktemp("detectron2")
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.FPN.IN_FEATURES = list(STAGES)
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1  # detectron2's default
    torch.manual_seed(0)
    detector = nn.Module()
    detector.backbone = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    resnet = randomize_norms(detector.backbone.bottom_up, 8).eval()
    DetectionCheckpointer(detector, save_dir=str(folder)).save("model_final")
    (folder / "dumped_config.yaml").write_text(cfg.dump())

    def network(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return resnet(x)
    return LibraryFile(folder / "model_final.pth", "resnet50", network,
                       "'model.backbone.bottom_up.', the only copy",
                       flags=["--stride-in-1x1", "true"])


@pytest.fixture(scope="module")
def detectron2_run_folder(detectron2_file: LibraryFile,
                          tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """The same file in a training run's folder, beside the config.yaml that detectron2's
    default_setup writes (``cfg.dump()``): the convention is read from it."""
    folder = tmp_path_factory.mktemp("detectron2_run")
    shutil.copy(detectron2_file.path, folder / "model_final.pth")
    shutil.copy(detectron2_file.path.parent / "dumped_config.yaml", folder / "config.yaml")
    return LibraryFile(folder / "model_final.pth", "resnet50", detectron2_file.network,
                       detectron2_file.rule)


# ------------------------------------------------------------------------------------ solo-learn
def _lightning_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict:
    """The layout of ``Trainer.save_checkpoint`` (what solo-learn's Checkpointer calls,
    solo/utils/checkpointer.py: ``trainer.save_checkpoint(ckpt)``)."""
    return {"epoch": 99, "global_step": 1000, "pytorch-lightning_version": "2.0.0",
            "state_dict": state_dict, "loops": {}, "callbacks": {}, "optimizer_states": [],
            "lr_schedulers": []}


def _solo_backbone(seed: int) -> nn.Module:
    """solo/methods/base.py (BaseMethod.__init__): ``self.backbone = self.base_model(method)``
    (torchvision's resnet18), ``self.backbone.fc = nn.Identity()``; channels_last unless
    ``performance.disable_channel_last``."""
    torch.manual_seed(seed)
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    return randomize_norms(backbone, seed).to(memory_format=torch.channels_last)


def _solo_file(factory: pytest.TempPathFactory, method: str, online: nn.Module,
               momentum: nn.Module, heads: dict[str, nn.Module], evaluated: nn.Module,
               rule: str) -> LibraryFile:
    """A solo-learn method's module (BaseMethod: backbone, classifier; BaseMomentumMethod:
    momentum_backbone; the method's heads) saved in Lightning's checkpoint layout."""
    module = nn.Module()
    module.backbone, module.classifier = online, nn.Linear(512, 10)
    module.momentum_backbone = momentum
    for name, head in heads.items():
        module.add_module(name, head)
    path = factory.mktemp(f"solo_{method}") / f"{method}-cifar-ep=99.ckpt"
    torch.save(_lightning_checkpoint(module.state_dict()), path)
    return LibraryFile(path, "resnet18", torchvision_stages(evaluated), rule)


@pytest.fixture(scope="module")
def solo_byol(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """solo-learn BYOL (solo/methods/byol.py: projector, predictor, momentum_projector)."""
    online = _solo_backbone(10)
    projector = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
    predictor = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
    return _solo_file(tmp_path_factory, "byol", online, _solo_backbone(11),
                      {"projector": projector, "predictor": predictor,
                       "momentum_projector": copy.deepcopy(projector)},
                      online, "the online encoder 'state_dict.backbone.'")


@pytest.fixture(scope="module")
def solo_dino(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """solo-learn DINO (solo/methods/dino.py): ``self.head = DINOHead(...)`` whose
    ``last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, num_prototypes, bias=False))``,
    ``self.momentum_head`` likewise; the teacher is BaseMomentumMethod's momentum_backbone."""
    def dino_head() -> nn.Module:
        head = nn.Module()
        head.mlp = nn.Sequential(nn.Linear(512, 64), nn.GELU(), nn.Linear(64, 16))
        head.last_layer = nn.utils.weight_norm(nn.Linear(16, 32, bias=False))
        return head

    teacher = _solo_backbone(13)
    return _solo_file(tmp_path_factory, "dino", _solo_backbone(12), teacher,
                      {"head": dino_head(), "momentum_head": dino_head()}, teacher,
                      "the momentum copy 'state_dict.momentum_backbone.', the teacher")


# ------------------------------------------------------------------------------------ VISSL
@pytest.fixture(scope="module")
def vissl_file(tmp_path_factory: pytest.TempPathFactory) -> LibraryFile:
    """VISSL 0.1.6: the ResNe(X)t trunk (vissl/models/trunks/resnext.py) wraps a torchvision
    ResNet-50's parts in ``self._feature_blocks = nn.ModuleDict([("conv1", ...), ("bn1", ...),
    ("conv1_relu", ...), ("maxpool", ...), ("layer1", ...), ...])``; its checkpoints hold them at
    ``checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]`` (the path VISSL's own
    model-zoo converters read), the heads beside them."""
    torch.manual_seed(0)
    resnet = randomize_norms(torchvision.models.resnet50(), 14)
    trunk = {f"_feature_blocks.{k}": v for k, v in resnet.state_dict().items()
             if not k.startswith("fc.")}
    heads = {"0.clf.0.weight": torch.randn(128, 2048), "0.clf.0.bias": torch.zeros(128)}
    path = tmp_path_factory.mktemp("vissl") / "model_final_checkpoint_phase199.torch"
    torch.save({"phase_idx": 199, "iteration": 1000, "iteration_num": 1000,
                "train_phase_idx": 199, "type": "consolidated",
                "classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads},
                                                     "meta": {}},
                                      "meters": {}, "optimizer": {}}}, path)
    return LibraryFile(path, "resnet50", torchvision_stages(resnet),
                       "'classy_state_dict.base_model.model.trunk._feature_blocks.', the only copy")


# ------------------------------------------------------------------------------------ tests
LIBRARIES = ["timm_file", "lightly_dino", "lightly_byol", "mmengine_file", "detectron2_file",
             "solo_byol", "solo_dino", "vissl_file"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_file_converts_exactly_into_both_engines(
        library: str, request: pytest.FixtureRequest, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    lib: LibraryFile = request.getfixturevalue(library)
    said = convert_and_compare(library, lib, tmp_path, capsys)
    assert said.count(lib.rule) == 2  # the copy chosen, and why, is stated


@pytest.mark.parametrize("library, prefix", [("timm_file", "state_dict_ema."),
                                             ("lightly_dino", "state_dict.student_backbone.")])
def test_another_copy_only_when_asked(library: str, prefix: str, request: pytest.FixtureRequest,
                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The EMA copy (timm) and the student (lightly's DINO) are read only under --prefix, and
    then exactly; they differ from the default copy, so choosing wrongly would show."""
    lib: LibraryFile = request.getfixturevalue(library)
    said = convert_and_compare(f"{library} --prefix {prefix}", lib, tmp_path, capsys,
                               flags=["--prefix", prefix], network=lib.others[prefix],
                               engines=("mmpose",))
    assert "chosen by --prefix" in said
    with torch.no_grad():
        default, other = lib.network(X)["res5"], lib.others[prefix](X)["res5"]
    assert float((default - other).abs().max()) > 1e-2 * float(default.abs().max())


def test_detectron2_file_without_its_convention_is_refused(detectron2_file: LibraryFile,
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    code = convert.main([str(detectron2_file.path), "--to", "detectron2", "--out",
                         str(tmp_path / "out.pkl")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "--stride-in-1x1 true" in err and "--stride-in-1x1 false" in err
    assert "STRIDE_IN_1X1" in err and str(detectron2_file.path) in err
    assert list(tmp_path.iterdir()) == []


def test_stride_in_1x1_is_built_faithfully_for_the_probes(detectron2_file: LibraryFile) -> None:
    """The probes' torchvision model of a stride-in-1x1 network gives the source's features;
    the same weights in torchvision's convention do not (what the converter used to do)."""
    with torch.no_grad():
        reference = detectron2_file.network(X)["res5"]
        faithful = open_backbone(detectron2_file.path, stride_in_1x1=True).model.eval()
        wrong = open_backbone(detectron2_file.path, stride_in_1x1=False).model.eval()
        got = stage_outputs(faithful, X)["res5"]
        off = stage_outputs(wrong, X)["res5"]
    print(f"\n[max-abs-diff] detectron2 -> suite torchvision model: res5 "
          f"{float((got - reference).abs().max()):.3g}; in torchvision's convention instead: "
          f"{float((off - reference).abs().max()):.3g}")
    assert float((got - reference).abs().max()) <= 1e-4 * float(reference.abs().max())
    assert float((off - reference).abs().max()) > 0.1 * float(reference.abs().max())


def test_the_convention_is_read_from_detectrons_config_beside_the_file(
        detectron2_run_folder: LibraryFile) -> None:
    backbone = open_backbone(detectron2_run_folder.path)
    assert backbone.meta["stride_in_1x1"] is True
    assert backbone.meta["stride_from"] == \
        f"MODEL.RESNETS.STRIDE_IN_1X1 in {detectron2_run_folder.path.parent / 'config.yaml'}"
    with torch.no_grad():
        reference = detectron2_run_folder.network(X)["res5"]
        got = stage_outputs(backbone.model.eval(), X)["res5"]
    assert float((got - reference).abs().max()) <= 1e-4 * float(reference.abs().max())


def test_a_flag_that_contradicts_the_file_is_refused(detectron2_run_folder: LibraryFile,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code = convert.main([str(detectron2_run_folder.path), "--to", "mmpose", "--out",
                         str(tmp_path / "out.pth"), "--stride-in-1x1", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "STRIDE_IN_1X1 in" in err and "config.yaml" in err


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_drivers_build_the_engine_in_the_convention_read(stride_in_1x1: bool,
                                                         tmp_path: Path) -> None:
    """coco_det sets MODEL.RESNETS.STRIDE_IN_1X1 and mpii_pose builds style='caffe' from the
    backbone's record (over a config that says otherwise)."""
    from transfer import coco_det, detectron2_driver
    from transfer.mpii_config import CPU_CONFIG, build_config, read_config

    config = coco_det.FULL_CONFIG  # MoCo's protocol: STRIDE_IN_1X1 False
    args = coco_det.parse_args(["--weights", "random", "--out", str(tmp_path),
                                "--config", str(config)])
    meta = {"arch": "resnet50", "stride_in_1x1": stride_in_1x1}
    cfg = detectron2_driver.setup_cfg(coco_det.Trainer, args, {"meta": meta,
                                                               "converted": "backbone.pkl"},
                                      {"num_classes": 2})
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is stride_in_1x1
    mm_cfg = build_config(
        read_config(CPU_CONFIG), data_root=tmp_path, backbone_file=tmp_path / "b.pth",
        arch="resnet50", protocol="fixed", out_dir=tmp_path / "mpii", n_train=4,
        style=convert.mmpose_style(meta))
    assert mm_cfg.model.backbone.style == ("caffe" if stride_in_1x1 else "pytorch")
