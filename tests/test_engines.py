"""The engines are real here: detectron2 trains Mask R-CNN, mmpose trains SimpleBaseline and
pycocotools scores, each on a few generated images, on the CPU. Nothing is mocked."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import transfer.compat  # noqa: F401  (before detectron2 / mmpose)
from pretrain.synthetic import coco


@pytest.fixture(scope="module")
def two_image_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return coco.generate(tmp_path_factory.mktemp("coco2"), n_train=2, n_val=2, seed=1)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.mark.slow
def test_detectron2_mask_rcnn_r50_fpn_trains_one_iteration(two_image_coco: Path) -> None:
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, build_detection_train_loader
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    name = "engine_test_two_images"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(two_image_coco / "annotations/instances_train2017"
                                              ".json"), str(two_image_coco / "train2017"))
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.WEIGHTS = ""  # random init: nothing can be downloaded here
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 10
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (128,), 160
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS = 2, 0.01, 0
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model).__name__ == "GeneralizedRCNN" and model.roi_heads.mask_on
    before = _params(model)
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, 1)
    losses = {k: v.latest() for k, v in trainer.storage.histories().items()
              if k.startswith("loss_") or k == "total_loss"}
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values()), losses
    after = _params(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("roi_heads.mask_head") for k in changed)
    assert any(k.startswith("backbone.bottom_up.res5") for k in changed)


def test_mmpose_simplebaseline_trains_one_iteration() -> None:
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmpose.models import build_pose_estimator
    from mmpose.registry import TRANSFORMS

    init_default_scope("mmpose")
    codec = dict(type="MSRAHeatmap", input_size=(64, 64), heatmap_size=(16, 16), sigma=2)
    torch.manual_seed(0)
    model = build_pose_estimator(dict(
        type="TopdownPoseEstimator",
        data_preprocessor=dict(type="PoseDataPreprocessor", mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type="ResNet", depth=50),
        head=dict(type="HeatmapHead", in_channels=2048, out_channels=16,
                  loss=dict(type="KeypointMSELoss", use_target_weight=True), decoder=codec),
        test_cfg=dict(flip_test=False)))
    pipeline = [TRANSFORMS.build(t) for t in (
        dict(type="GetBBoxCenterScale"), dict(type="TopdownAffine", input_size=(64, 64)),
        dict(type="GenerateTarget", encoder=codec), dict(type="PackPoseInputs"))]
    rng = np.random.default_rng(0)
    samples = []
    for i in range(2):
        sample = {"img": rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), "img_shape": (96, 96),
                  "bbox": np.array([[10.0, 10.0, 80.0, 90.0]], np.float32),
                  "bbox_score": np.ones(1, np.float32), "id": i, "img_id": i,
                  "keypoints": rng.uniform(15, 75, (1, 16, 2)).astype(np.float32),
                  "keypoints_visible": np.ones((1, 16), np.float32)}
        for transform in pipeline:
            sample = transform(sample)
        samples.append(sample)
    before = _params(model)
    losses = model.train_step(pseudo_collate(samples),
                              OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert "loss_kpt" in losses and math.isfinite(float(losses["loss_kpt"]))
    after = _params(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("backbone.layer4") for k in changed)
    assert any(k.startswith("head.final_layer") for k in changed)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pycocotools_scores_perfect_and_wrong_detections(two_image_coco: Path,
                                                         iou_type: str) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(two_image_coco / "annotations/instances_val2017.json"))
    anns = gt.loadAnns(gt.getAnnIds())
    assert anns

    def average_precision(dets: list[dict]) -> float:
        evaluator = COCOeval(gt, gt.loadRes(dets), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return float(evaluator.stats[0])

    categories = sorted(gt.getCatIds())

    def detection(ann: dict, wrong_class: bool) -> dict:
        category = categories[(categories.index(ann["category_id"]) + wrong_class)
                              % len(categories)]
        det = {"image_id": ann["image_id"], "category_id": category, "score": 0.9}
        if iou_type == "bbox":
            return {**det, "bbox": ann["bbox"]}
        rle = gt.annToRLE(ann)
        return {**det, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}

    assert average_precision([detection(a, False) for a in anns]) == pytest.approx(1.0)
    assert average_precision([detection(a, True) for a in anns]) == pytest.approx(0.0)
    # the json the evaluator reads is the generated one, unchanged
    assert json.loads((two_image_coco / "annotations/instances_val2017.json").read_text())["images"]
