"""The backbone seam: one random-init control (one name, one init policy) opened the same way by
every stage, files read once and checked against the flags, and the layering it allows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.backbones import RESNETS, arch_of, build_resnet
from pretrain.checkpoint import CheckpointError, save_backbone
from pretrain.open_backbone import is_random, open_backbone, random_init_id


@pytest.mark.parametrize("arch", list(RESNETS))
def test_random_control_zero_inits_every_residual_branch(arch: str) -> None:
    model = open_backbone("random", arch, "imagenet", seed=0).model
    last_norms = [getattr(block, "bn3" if RESNETS[arch].bottleneck else "bn2")
                  for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
                  for block in layer]
    assert len(last_norms) == sum(  # every block of the arch, none left out
        1 for k in model.state_dict() if k.endswith(".conv1.weight") and k.startswith("layer"))
    assert all(torch.count_nonzero(bn.weight) == 0 for bn in last_norms)
    assert torch.count_nonzero(model.layer1[0].conv1.weight) > 0  # the rest is a random init


def test_random_control_is_one_name_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = open_backbone("random", "resnet18", "small", seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    b, c = open_backbone("RANDOM", "resnet18", "small", seed=4), open_backbone(seed=5)
    assert a.meta["backbone_id"] == random_init_id("resnet18", "small", 4) \
        == "random-init-resnet18-small-seed4"
    assert a.meta["method"] == "random-init" and a.weights is None
    assert a.key == b.key != c.key
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert not torch.equal(a.model.layer1[0].conv1.weight, c.model.layer1[0].conv1.weight)
    assert c.meta["arch"] == "resnet18" and c.meta["stem"] == "imagenet"  # the defaults
    assert is_random("Random") and not is_random("random.pth") and not is_random(None)


def test_a_file_is_opened_with_its_own_arch_and_flags_must_agree(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build_resnet("resnet34", "small").state_dict()
    path = save_backbone(tmp_path / "b.safetensors", state, {"method": "byol"})
    backbone = open_backbone(path)
    assert backbone.weights == path and backbone.meta["method"] == "byol"
    assert arch_of(backbone.model.state_dict()) == "resnet34" and backbone.meta["stem"] == "small"
    assert all(torch.equal(v, state[k]) for k, v in backbone.model.state_dict().items())
    assert open_backbone(path, "resnet34", "small").key == backbone.key
    with pytest.raises(CheckpointError, match="--arch resnet50: .*holds a resnet34"):
        open_backbone(path, arch="resnet50")
    with pytest.raises(CheckpointError, match="--stem imagenet"):
        open_backbone(path, stem="imagenet")
