# ruff: noqa: E501 -- one table row per line, as in the paper
"""The published numbers in benchmarks/results/reference.csv, transcribed a second time here from the
papers' and model zoos' text with their table and cell: a typo in either fails."""
from __future__ import annotations

import pytest

from benchmarks.results.leaderboard import reference_rows

# (source, cell of the table: row / column, backbone, task, protocol, metric, value)
T4, T3, T2 = "RCL Table 4", "RCL Table 3", "RCL Table 2"
MCR, MSR, MM = "MCR/CompMod Table 5", "ICL-MSR Table 1", "MetaMask Table 2"
D2, SOLO = "detectron2 model zoo", "solo-learn README (ResNet-18, CIFAR-10)"
MMSELF = "mmselfsup 0.x model zoo"
TRANSCRIPTION = [
    (T4, "Fixed feature extractor / SimCLR / Digit", "simclr", "colorful_mnist", "linear", "digit_top1", 14.9),
    (T4, "Fixed feature extractor / SimCLR / Bkgd", "simclr", "colorful_mnist", "linear", "background_top1", 47.3),
    (T4, "Fixed feature extractor / MoCo / Digit", "mocov2", "colorful_mnist", "linear", "digit_top1", 15.7),
    (T4, "Fixed feature extractor / MoCo / Bkgd", "mocov2", "colorful_mnist", "linear", "background_top1", 48.5),
    (T4, "Fixed feature extractor / BYOL / Digit", "byol", "colorful_mnist", "linear", "digit_top1", 15.5),
    (T4, "Fixed feature extractor / BYOL / Bkgd", "byol", "colorful_mnist", "linear", "background_top1", 49.0),
    (T4, "Fixed feature extractor / RCL (ours) / Digit", "mocov2+rcl", "colorful_mnist", "linear", "digit_top1", 88.3),
    (T4, "Fixed feature extractor / RCL (ours) / Bkgd", "mocov2+rcl", "colorful_mnist", "linear", "background_top1", 46.5),
    (T4, "Fine-tuning / SimCLR / Digit", "simclr", "colorful_mnist", "finetune", "digit_top1", 92.4),
    (T4, "Fine-tuning / SimCLR / Bkgd", "simclr", "colorful_mnist", "finetune", "background_top1", 54.8),
    (T4, "Fine-tuning / MoCo / Digit", "mocov2", "colorful_mnist", "finetune", "digit_top1", 92.7),
    (T4, "Fine-tuning / MoCo / Bkgd", "mocov2", "colorful_mnist", "finetune", "background_top1", 54.9),
    (T4, "Fine-tuning / BYOL / Digit", "byol", "colorful_mnist", "finetune", "digit_top1", 92.7),
    (T4, "Fine-tuning / BYOL / Bkgd", "byol", "colorful_mnist", "finetune", "background_top1", 54.9),
    (T4, "Fine-tuning / RCL (ours) / Digit", "mocov2+rcl", "colorful_mnist", "finetune", "digit_top1", 93.3),
    (T4, "Fine-tuning / RCL (ours) / Bkgd", "mocov2+rcl", "colorful_mnist", "finetune", "background_top1", 54.7),
    (T4, "Supervised on digit / Digit", "supervised", "colorful_mnist", "supervised:digit", "digit_top1", 96.1),
    (T4, "Supervised on digit / Bkgd", "supervised", "colorful_mnist", "supervised:digit", "background_top1", 11.4),
    (T4, "Supervised on bkgd / Digit", "supervised", "colorful_mnist", "supervised:background", "digit_top1", 12.9),
    (T4, "Supervised on bkgd / Bkgd", "supervised", "colorful_mnist", "supervised:background", "background_top1", 56.7),
    (T4, "Supervised on digit & bkgd / Digit", "supervised", "colorful_mnist", "supervised:digit+background", "digit_top1", 93.0),
    (T4, "Supervised on digit & bkgd / Bkgd", "supervised", "colorful_mnist", "supervised:digit+background", "background_top1", 54.5),
    (T3, "Fixed feature extractor / SimCLR / Age", "simclr", "fairface", "linear", "age_top1", 43.9),
    (T3, "Fixed feature extractor / SimCLR / Gender", "simclr", "fairface", "linear", "gender_top1", 78.1),
    (T3, "Fixed feature extractor / SimCLR / Ethn.", "simclr", "fairface", "linear", "race_top1", 61.7),
    (T3, "Fixed feature extractor / MoCo / Age", "mocov2", "fairface", "linear", "age_top1", 44.5),
    (T3, "Fixed feature extractor / MoCo / Gender", "mocov2", "fairface", "linear", "gender_top1", 78.6),
    (T3, "Fixed feature extractor / MoCo / Ethn.", "mocov2", "fairface", "linear", "race_top1", 61.9),
    (T3, "Fixed feature extractor / BYOL / Age", "byol", "fairface", "linear", "age_top1", 44.3),
    (T3, "Fixed feature extractor / BYOL / Gender", "byol", "fairface", "linear", "gender_top1", 78.6),
    (T3, "Fixed feature extractor / BYOL / Ethn.", "byol", "fairface", "linear", "race_top1", 62.3),
    (T3, "Fixed feature extractor / RCL (ours) / Age", "mocov2+rcl", "fairface", "linear", "age_top1", 50.0),
    (T3, "Fixed feature extractor / RCL (ours) / Gender", "mocov2+rcl", "fairface", "linear", "gender_top1", 87.2),
    (T3, "Fixed feature extractor / RCL (ours) / Ethn.", "mocov2+rcl", "fairface", "linear", "race_top1", 61.2),
    (T3, "Fine-tuning / SimCLR / Age", "simclr", "fairface", "finetune", "age_top1", 54.3),
    (T3, "Fine-tuning / SimCLR / Gender", "simclr", "fairface", "finetune", "gender_top1", 91.1),
    (T3, "Fine-tuning / SimCLR / Ethn.", "simclr", "fairface", "finetune", "race_top1", 69.1),
    (T3, "Fine-tuning / MoCo / Age", "mocov2", "fairface", "finetune", "age_top1", 54.7),
    (T3, "Fine-tuning / MoCo / Gender", "mocov2", "fairface", "finetune", "gender_top1", 91.3),
    (T3, "Fine-tuning / MoCo / Ethn.", "mocov2", "fairface", "finetune", "race_top1", 69.2),
    (T3, "Fine-tuning / BYOL / Age", "byol", "fairface", "finetune", "age_top1", 54.6),
    (T3, "Fine-tuning / BYOL / Gender", "byol", "fairface", "finetune", "gender_top1", 91.5),
    (T3, "Fine-tuning / BYOL / Ethn.", "byol", "fairface", "finetune", "race_top1", 69.3),
    (T3, "Fine-tuning / RCL (ours) / Age", "mocov2+rcl", "fairface", "finetune", "age_top1", 55.3),
    (T3, "Fine-tuning / RCL (ours) / Gender", "mocov2+rcl", "fairface", "finetune", "gender_top1", 92.3),
    (T3, "Fine-tuning / RCL (ours) / Ethn.", "mocov2+rcl", "fairface", "finetune", "race_top1", 69.0),
    (T3, "Supervised on all / Age", "supervised", "fairface", "supervised:age+gender+race", "age_top1", 54.8),
    (T3, "Supervised on all / Gender", "supervised", "fairface", "supervised:age+gender+race", "gender_top1", 91.9),
    (T3, "Supervised on all / Ethn.", "supervised", "fairface", "supervised:age+gender+race", "race_top1", 68.8),
    (T2, "Fixed feature extractor / SimCLR / PCKh", "simclr", "mpii_pose", "fixed", "PCKh@0.5", 60.8),
    (T2, "Fine-tuning / SimCLR / PCKh", "simclr", "mpii_pose", "finetune", "PCKh@0.5", 87.1),
    (T2, "Fixed feature extractor / MoCo / PCKh", "mocov2", "mpii_pose", "fixed", "PCKh@0.5", 61.4),
    (T2, "Fine-tuning / MoCo / PCKh", "mocov2", "mpii_pose", "finetune", "PCKh@0.5", 87.2),
    (T2, "Fixed feature extractor / BYOL / PCKh", "byol", "mpii_pose", "fixed", "PCKh@0.5", 61.4),
    (T2, "Fine-tuning / BYOL / PCKh", "byol", "mpii_pose", "finetune", "PCKh@0.5", 87.2),
    (T2, "Fixed feature extractor / RCL (ours) / PCKh", "mocov2+rcl", "mpii_pose", "fixed", "PCKh@0.5", 65.1),
    (T2, "Fine-tuning / RCL (ours) / PCKh", "mocov2+rcl", "mpii_pose", "finetune", "PCKh@0.5", 87.8),
    (T2, "Supervised / PCKh", "supervised", "mpii_pose", "finetune", "PCKh@0.5", 87.7),
    (MCR, "Supervised / Object Det. AP", "supervised", "coco_det", "finetune", "bbox_AP", 38.2),
    (MCR, "Supervised / Instance Seg. AP", "supervised", "coco_det", "finetune", "segm_AP", 33.3),
    (MCR, "SimCLR / Object Det. AP", "simclr", "coco_det", "finetune", "bbox_AP", 37.9),
    (MCR, "SimCLR / Instance Seg. AP", "simclr", "coco_det", "finetune", "segm_AP", 33.2),
    (MCR, "BYOL / Object Det. AP", "byol", "coco_det", "finetune", "bbox_AP", 37.9),
    (MCR, "BYOL / Instance Seg. AP", "byol", "coco_det", "finetune", "segm_AP", 33.1),
    (MCR, "Barlow Twins / Object Det. AP", "barlow_twins", "coco_det", "finetune", "bbox_AP", 39.2),
    (MCR, "Barlow Twins / Instance Seg. AP", "barlow_twins", "coco_det", "finetune", "segm_AP", 34.2),
    (MCR, "SimCLR+ / Object Det. AP", "simclr+mcr", "coco_det", "finetune", "bbox_AP", 38.1),
    (MCR, "SimCLR+ / Instance Seg. AP", "simclr+mcr", "coco_det", "finetune", "segm_AP", 33.7),
    (MCR, "BYOL+ / Object Det. AP", "byol+mcr", "coco_det", "finetune", "bbox_AP", 39.7),
    (MCR, "BYOL+ / Instance Seg. AP", "byol+mcr", "coco_det", "finetune", "segm_AP", 35.4),
    (MCR, "Barlow Twins+ / Object Det. AP", "barlow_twins+mcr", "coco_det", "finetune", "bbox_AP", 39.1),
    (MCR, "Barlow Twins+ / Instance Seg. AP", "barlow_twins+mcr", "coco_det", "finetune", "segm_AP", 35.2),
    (MSR, "SimCLR / CIFAR-10 linear", "simclr", "cifar10", "linear", "top1", 91.80),
    (MSR, "SimCLR / CIFAR-10 5-nn", "simclr", "cifar10", "knn5", "top1", 88.42),
    (MSR, "BYOL / CIFAR-10 linear", "byol", "cifar10", "linear", "top1", 91.73),
    (MSR, "BYOL / CIFAR-10 5-nn", "byol", "cifar10", "knn5", "top1", 89.45),
    (MSR, "ICL-MSR(SimCLR + MSR) / CIFAR-10 linear", "simclr+msr", "cifar10", "linear", "top1", 92.34),
    (MSR, "ICL-MSR(SimCLR + MSR) / CIFAR-10 5-nn", "simclr+msr", "cifar10", "knn5", "top1", 89.47),
    (MSR, "ICL-MSR(BYOL + MSR) / CIFAR-10 linear", "byol+msr", "cifar10", "linear", "top1", 92.26),
    (MSR, "ICL-MSR(BYOL + MSR) / CIFAR-10 5-nn", "byol+msr", "cifar10", "knn5", "top1", 90.12),
    (MM, "SimCLR / CIFAR-10", "simclr", "cifar10", "knn5", "top1", 81.73),
    (MM, "SimCLR + MetaMask / CIFAR-10", "simclr+metamask", "cifar10", "knn5", "top1", 86.01),
    (MM, "Barlow Twins / CIFAR-10", "barlow_twins", "cifar10", "knn5", "top1", 85.72),
    (MM, "Barlow Twins + MetaMask / CIFAR-10", "barlow_twins+metamask", "cifar10", "knn5", "top1", 87.53),
    (MM, "BYOL / CIFAR-10", "byol", "cifar10", "knn5", "top1", 88.05),
    (MM, "BYOL + MetaMask / CIFAR-10", "byol+metamask", "cifar10", "knn5", "top1", 87.53),
    (D2, "R50-FPN 1x Mask R-CNN / box AP", "supervised", "coco_det", "finetune", "bbox_AP", 38.6),
    (D2, "R50-FPN 1x Mask R-CNN / mask AP", "supervised", "coco_det", "finetune", "segm_AP", 35.2),
    (D2, "R50-C4 1x Mask R-CNN / box AP", "supervised", "coco_det", "finetune", "bbox_AP", 36.8),
    (D2, "R50-C4 1x Mask R-CNN / mask AP", "supervised", "coco_det", "finetune", "segm_AP", 32.2),
    ("SimSiam paper", "COCO C4 / MoCo v2 / AP_bb", "mocov2", "coco_det", "finetune", "bbox_AP", 39.2),
    ("SimSiam paper", "COCO C4 / MoCo v2 / AP_mk", "mocov2", "coco_det", "finetune", "segm_AP", 34.3),
    (MMSELF, "MoCo v2 200 ep / box AP", "mocov2", "coco_det", "finetune", "bbox_AP", 40.2),
    (MMSELF, "MoCo v2 200 ep / mask AP", "mocov2", "coco_det", "finetune", "segm_AP", 36.1),
    (MMSELF, "SimCLR 200 ep / box AP", "simclr", "coco_det", "finetune", "bbox_AP", 38.7),
    (MMSELF, "SimCLR 200 ep / mask AP", "simclr", "coco_det", "finetune", "segm_AP", 34.9),
    (MMSELF, "BYOL 200 ep / box AP", "byol", "coco_det", "finetune", "bbox_AP", 40.9),
    (MMSELF, "BYOL 200 ep / mask AP", "byol", "coco_det", "finetune", "segm_AP", 36.8),
    ("mmpose model zoo td-hm_res50 MPII 256x256", "res50 / PCKh@0.5", "supervised", "mpii_pose", "finetune", "PCKh@0.5", 88.2),
    ("mmpose model zoo td-hm_res50 MPII 256x256", "res50 / Mean@0.1", "supervised", "mpii_pose", "finetune", "PCKh@0.1", 28.6),
    (SOLO, "SimCLR / CIFAR-10 Acc@1", "simclr", "cifar10", "linear", "top1", 90.74),
    (SOLO, "BYOL / CIFAR-10 Acc@1", "byol", "cifar10", "linear", "top1", 92.58),
    (SOLO, "Barlow Twins / CIFAR-10 Acc@1", "barlow_twins", "cifar10", "linear", "top1", 92.10),
    (SOLO, "MoCo V2+ / CIFAR-10 Acc@1", "mocov2plus", "cifar10", "linear", "top1", 92.94),
]


def _name(row: dict[str, str]) -> str:
    return row["method"] + ("" if row["regularizer"] == "none" else f"+{row['regularizer']}")


def _identity(row: dict[str, str]) -> tuple:
    return (row["source"], _name(row), row["task"], row["protocol"], row["metric"],
            float(row["value"]))


def test_every_reference_number_matches_its_transcription() -> None:
    stored = sorted(_identity(r) for r in reference_rows())
    transcribed = sorted((s, b, t, p, m, v) for s, _, b, t, p, m, v in TRANSCRIPTION)
    assert len(stored) == len(transcribed)
    for row, expected in zip(stored, transcribed):
        assert row == expected, f"reference.csv {row} != transcription {expected}"


def test_reference_rows_carry_recipe_budget_and_the_issue_caveats() -> None:
    refs = reference_rows()
    assert all(r["recipe"] and r["budget"] == "full" for r in refs)
    rcl = [r for r in refs if r["regularizer"] == "rcl"]
    assert rcl and all(r["method"] == "mocov2" and "MoCo" in r["note"] for r in rcl)
    (plus,) = [r for r in refs if r["source"].startswith("solo-learn") and "MoCo" in r["note"]]
    assert plus["method"] == "mocov2plus" and "V2+" in plus["note"]
    metamask = [r for r in refs if r["source"] == MM]
    assert all("mask-weighted" in r["note"] and "highest" in r["note"] for r in metamask)
    (repeat,) = [r for r in metamask if _name(r) == "byol+metamask"]
    assert "inconsistent transcription" in repeat["note"]
    mcr = [r for r in refs if r["source"] == MCR]
    assert {r["recipe"] for r in mcr} == {"R50-C4-1x"}


@pytest.mark.parametrize("source", [T4, T3, T2, MCR, MSR, MM])
def test_each_seed_paper_table_is_transcribed_whole(source: str) -> None:
    """Every cell of each seed paper's table is stored, once, as transcribed: a table missing a
    row, or holding one twice, fails."""
    stored = sorted(_identity(r) for r in reference_rows() if r["source"] == source)
    transcribed = sorted((s, b, t, p, m, v) for s, _, b, t, p, m, v in TRANSCRIPTION
                         if s == source)
    assert len(transcribed) >= 3 and stored == transcribed
