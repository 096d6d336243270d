"""The probe engine: linear probe, weighted kNN, feature cache, backbone loading, fine-tuning
(benchmarks/probes/protocols.py, benchmarks/probes/features.py, benchmarks/probes/rows.py)."""
from __future__ import annotations

import shutil

import pytest
import torch

from benchmarks.probes.features import (
    Features,
    cached_features,
    eval_transform,
    feature_key,
    train_transform,
)
from benchmarks.probes.protocols import (
    FinetuneRecipe,
    LinearRecipe,
    accuracy,
    finetune,
    knn_predict,
    linear_probe,
)
from benchmarks.probes.rows import probe_summary
from pretrain.backbones import build_resnet
from pretrain.checkpoint import CheckpointError, save_backbone
from pretrain.data import ColorfulMNIST
from pretrain.open_backbone import open_backbone


def planted(n: int, seed: int, dim: int = 32) -> Features:
    """Attribute 'signal' (4 classes) is planted as well-separated cluster centres along fixed
    directions; attribute 'noise' (3 classes) is independent of the features."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=torch.Generator().manual_seed(123)) * 3
    signal = torch.randint(0, 4, (n,), generator=gen)
    noise = torch.randint(0, 3, (n,), generator=gen)
    x = centres[signal] + torch.randn(n, dim, generator=gen)
    return Features(x, {"signal": signal, "noise": noise})


CLASSES = {"signal": 4, "noise": 3}
FAST = LinearRecipe(epochs=30)


def test_linear_probe_recovers_planted_signal_and_is_chance_on_noise():
    train, test = planted(800, 0), planted(1500, 1)
    acc = linear_probe(train, {"test": test}, CLASSES, seed=0, recipe=FAST)["test"]
    assert acc["signal"] > 98
    assert abs(acc["noise"] - 100 / 3) < 6  # 1500 samples: chance +- ~5 standard errors


def test_linear_probe_is_deterministic_by_seed():
    train, test = planted(300, 0), planted(200, 1)
    runs = [linear_probe(train, {"t": test}, CLASSES, seed=s, recipe=FAST)["t"] for s in (0, 0)]
    assert runs[0] == runs[1]


def test_knn_recovers_planted_signal_and_is_chance_on_noise():
    train, test = planted(800, 0), planted(1500, 1)
    acc = {k: accuracy(p, test.labels) for k, p in knn_predict(train, test.x, CLASSES).items()}
    assert set(acc) == {5, 200}
    for k in (5, 200):
        assert acc[k]["signal"] > 98
        assert abs(acc[k]["noise"] - 100 / 3) < 6


def brute_force_knn(train: Features, query: torch.Tensor, attr: str, k: int,
                    temperature: float = 0.07) -> list[int]:
    """The textbook weighted kNN, one query at a time, in plain Python."""
    preds = []
    for q in query.tolist():
        sims = []
        for i, t in enumerate(train.x.tolist()):
            dot = sum(a * b for a, b in zip(q, t))
            norm = sum(a * a for a in q) ** 0.5 * sum(b * b for b in t) ** 0.5
            sims.append((dot / norm, i))
        votes: dict[int, float] = {}
        for sim, i in sorted(sims, reverse=True)[:k]:
            label = int(train.labels[attr][i])
            votes[label] = votes.get(label, 0.0) + torch.tensor(sim / temperature).exp().item()
        preds.append(max(votes, key=votes.get))
    return preds


def test_knn_matches_brute_force_reference():
    gen = torch.Generator().manual_seed(0)
    train = Features(torch.randn(60, 8, generator=gen),
                     {"a": torch.randint(0, 5, (60,), generator=gen),
                      "b": torch.randint(0, 2, (60,), generator=gen)})
    query = torch.randn(25, 8, generator=gen)
    ks = (1, 5, 20, 200)  # 200 > len(train): capped at 60
    preds = knn_predict(train, query, {"a": 5, "b": 2}, ks=ks, chunk=7)
    for k in ks:
        for attr in ("a", "b"):
            assert preds[k][attr].tolist() == brute_force_knn(train, query, attr, min(k, 60))


def write_checkpoint(path, seed: int, **meta):
    torch.manual_seed(seed)
    model = build_resnet("resnet18", "imagenet")
    save_backbone(path, model.state_dict(), {"method": "test", "arch": "resnet18",
                                             "stem": "imagenet", **meta})
    return path


def test_feature_cache_key_follows_checkpoint_transform_and_data(tmp_path, tiny_data):
    a = open_backbone(write_checkpoint(tmp_path / "a.safetensors", 0))
    b = open_backbone(write_checkpoint(tmp_path / "b.safetensors", 1))
    same_as_a = open_backbone(write_checkpoint(tmp_path / "a2.safetensors", 0))
    data = ColorfulMNIST(tiny_data, "test", eval_transform(32))
    assert feature_key(a, data) == feature_key(same_as_a, data)
    assert feature_key(a, data) != feature_key(b, data)                  # checkpoint bytes
    assert feature_key(a, data) != feature_key(
        a, ColorfulMNIST(tiny_data, "test", eval_transform(48)))          # transform
    assert feature_key(a, data) != feature_key(
        a, ColorfulMNIST(tiny_data, "train", eval_transform(32)))         # split
    random = open_backbone("random", "resnet18", "imagenet", seed=0)
    assert feature_key(random, data) != feature_key(
        open_backbone("random", "resnet18", "imagenet", seed=1), data)

    # A data file that changes is a new key too.
    copy = shutil.copytree(tiny_data / "colorful_mnist", tmp_path / "cm")
    before = feature_key(a, ColorfulMNIST(copy, "test", eval_transform(32)))
    (copy / "test.csv").write_text((copy / "test.csv").read_text().replace(",3,", ",4,", 1))
    assert feature_key(a, ColorfulMNIST(copy, "test", eval_transform(32))) != before


def test_cached_features_extract_once_and_reextract_on_change(tmp_path, tiny_data):
    path = write_checkpoint(tmp_path / "a.safetensors", 0)
    data = ColorfulMNIST(tiny_data, "test", eval_transform(32))
    timings: dict[str, float] = {}
    first = cached_features(open_backbone(path), data, tmp_path / "cache", "cpu",
                            timings=timings, desc="first")
    assert "first" in timings and len(list((tmp_path / "cache" / "features").iterdir())) == 1
    again = cached_features(open_backbone(path), data, tmp_path / "cache", "cpu",
                            timings=timings, desc="again")
    assert "again" not in timings                       # read from the cache
    assert torch.equal(first.x, again.x) and first.x.shape == (len(data), 512)
    assert torch.equal(first.labels["digit"], torch.tensor([s[1]["digit"]
                                                            for s in data.samples]))
    write_checkpoint(path, 1)                            # same path, new bytes
    changed = cached_features(open_backbone(path), data, tmp_path / "cache", "cpu",
                              timings=timings, desc="changed")
    assert "changed" in timings and not torch.equal(changed.x, first.x)


def test_partial_or_mismatched_checkpoint_is_an_error(tmp_path):
    state = build_resnet("resnet18", "imagenet").state_dict()
    state.pop("layer4.1.bn2.running_var")
    save_backbone(tmp_path / "partial.safetensors", state, {"arch": "resnet18"})
    with pytest.raises(CheckpointError, match="layer4.1.bn2.running_var"):  # the converter's
        open_backbone(tmp_path / "partial.safetensors")
    path = write_checkpoint(tmp_path / "ok.safetensors", 0)
    with pytest.raises(CheckpointError, match="--stem small"):
        open_backbone(path, stem="small")
    with pytest.raises(CheckpointError, match="absent.safetensors: no such checkpoint file"):
        open_backbone(tmp_path / "absent.safetensors")


def test_finetune_is_deterministic_by_seed(tiny_data):
    data = ColorfulMNIST(tiny_data, "train", train_transform(32))
    recipe = FinetuneRecipe(epochs=1, batch_size=16)
    states = []
    for seed in (0, 0, 1):
        model = open_backbone("random", "resnet18", "imagenet").model
        heads = finetune(model, data, {"digit": 10, "background": 10}, "cpu", recipe, seed)
        states.append(torch.cat([p.detach().flatten() for p in
                                 [*model.parameters(), *heads.parameters()]]))
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], states[2])


def test_probe_summary_mean_and_std():
    stats = probe_summary([{"linear": {"m": 1.0}}, {"linear": {"m": 3.0}}])["linear"]["m"]
    assert stats["mean"] == 2.0 and stats["n"] == 2
    assert stats["std"] == pytest.approx(2 ** 0.5, abs=1e-3)
