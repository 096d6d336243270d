"""The bounds on detectron2 YAML configs (transfer/config_guard.py over pretrain/bounded_yaml.py):
a YAML bomb, a recursive alias, an oversized file and a looping or too deep ``_BASE_`` chain are
each one error line naming the file, from coco_det and from detectron2's own reader; the suite's
own configs pass. Pretraining's config files are read within the same bounds."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_hostile import _assert_untouched, _checksums, _one_error_line

import transfer.compat  # noqa: F401,I001  (its guards, before detectron2)
from pretrain.bounded_yaml import MAX_YAML_BYTES, YamlBoundError
from transfer import coco_det, compat, detectron2_compat
from transfer.config_guard import MAX_BASE_DEPTH, check_config_chain

pytestmark = pytest.mark.reliability
# 366 bytes: nine levels of nine aliases, 9**9 (387 million) strings once expanded, under a key
# detectron2 knows (the shape of issue 30's 566-byte file)
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{b}: &{b} [*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a}]" for a, b in zip("abcdefgh",
                                                                                  "bcdefghi")]
    + ["MODEL:", "  PIXEL_MEAN: *i", ""])
BOMBS = {"laughs.yaml": (BILLION_LAUGHS, "YAML"),
         "recursive.yaml": ("MODEL: &m\n  PIXEL_MEAN: [*m]\n", "contains it"),
         "large.yaml": ("MODEL:\n" + "  # padding\n" * (MAX_YAML_BYTES // 10), "larger than")}


@pytest.mark.parametrize("name", list(BOMBS))
def test_coco_det_refuses_a_yaml_bomb_in_one_line(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    text, phrase = BOMBS[name]
    (tmp_path / name).write_text(text)
    before = _checksums(tmp_path)
    assert coco_det.main(["--weights", "random", "--config", str(tmp_path / name), "--data",
                          str(tiny_data / "coco"), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, name, phrase)
    _assert_untouched(tmp_path, before)


def test_detectron2_reader_refuses_a_yaml_bomb(tmp_path: Path) -> None:
    from detectron2.config import get_cfg

    (tmp_path / "laughs.yaml").write_text(BILLION_LAUGHS)
    with pytest.raises(YamlBoundError, match="laughs.yaml: .*YAML bomb"):
        get_cfg().merge_from_file(str(tmp_path / "laughs.yaml"))


def test_a_base_loop_and_a_deep_chain_are_one_line(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(detectron2_compat, "config_roots", lambda: [tmp_path.resolve()])
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: [a.yaml]\nMODEL: {MASK_ON: true}\n")
    for depth in range(MAX_BASE_DEPTH + 1):
        (tmp_path / f"deep{depth}.yaml").write_text(f"_BASE_: deep{depth + 1}.yaml\n")
    (tmp_path / f"deep{MAX_BASE_DEPTH + 1}.yaml").write_text("MODEL: {MASK_ON: true}\n")
    before = _checksums(tmp_path)
    for name, phrase in (("a.yaml", "loops"), ("deep0.yaml", "deeper than")):
        assert coco_det.main(["--weights", "random", "--config", str(tmp_path / name), "--data",
                              str(tiny_data / "coco"), "--out", str(tmp_path / "run")]) == 2
        _one_error_line(capsys.readouterr().err, name, phrase)
    _assert_untouched(tmp_path, before)
    from detectron2.config import get_cfg

    with pytest.raises(YamlBoundError, match="a.yaml: its _BASE_ chain loops"):
        get_cfg().merge_from_file(str(tmp_path / "a.yaml"))


def test_the_suites_configs_pass_the_guard() -> None:
    configs = sorted((Path(coco_det.__file__).parent / "configs").glob("*.yaml"))
    assert configs
    for config in configs:
        check_config_chain(config, compat.detectron2_base)  # their zoo bases too
        coco_det.load_config(config)


@pytest.mark.parametrize("where", ["--config", "the run folder's config.yaml"])
def test_pretraining_refuses_a_yaml_bomb_config(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, where: str) -> None:
    from pretrain import train as train_module

    anchors = BILLION_LAUGHS.replace("MODEL:\n  PIXEL_MEAN: *i\n", "").splitlines()
    bomb = "\n".join(["regularizer_args:", *[f"  {line}" for line in anchors],
                      "method_args: {temperature: *i}", ""])  # under keys pretraining knows
    if where == "--config":
        (tmp_path / "bomb.yaml").write_text(bomb)
        argv = ["--config", str(tmp_path / "bomb.yaml"), "--out", str(tmp_path / "runs")]
    else:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "last_state.pt").write_bytes(b"")
        (tmp_path / "run" / "config.yaml").write_text(bomb)
        argv = ["--resume", str(tmp_path / "run")]
    before = _checksums(tmp_path)
    assert train_module.main(argv) == 2
    _one_error_line(capsys.readouterr().err, "YAML bomb")
    _assert_untouched(tmp_path, before)
