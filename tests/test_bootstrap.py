"""The environment itself: the suite installs only its own packages, and the shims are guarded."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_installed_distribution_provides_no_datasets_module(tmp_path: Path) -> None:
    out = _python("import datasets", tmp_path)
    assert "No module named 'datasets'" in out.stderr
    out = _python("import pretrain, transfer, benchmarks; print('ok')", tmp_path)
    assert out.stdout.strip() == "ok", out.stderr


def test_project_folder_never_shadows_huggingface_datasets(tmp_path: Path) -> None:
    # A regular `datasets` package (as Hugging Face's is) wins over our script folder even when
    # Python is started in the repository root, where the cwd comes first on sys.path.
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("ORIGIN = 'huggingface'\n")
    out = _python("import datasets; print(datasets.ORIGIN)", ROOT,
                  PYTHONPATH=str(tmp_path / "site"))
    assert out.stdout.strip() == "huggingface", out.stderr


def test_compat_shims_are_guarded_and_idempotent() -> None:
    from transfer import compat

    first = compat.apply()
    assert compat.apply() is first
    import numpy as np
    from PIL import Image

    assert Image.LINEAR == Image.BILINEAR
    assert np.int is int or "np.int" not in first["numpy_aliases"]


def test_missing_compiled_op_raises_naming_the_op() -> None:
    from transfer import compat

    if not compat.apply()["detectron2_missing_C"]:
        pytest.skip("an official detectron2 build with _C is installed")
    from detectron2 import _C

    with pytest.raises(compat.MissingCompiledOpError, match=r"detectron2\._C\.deform_conv_forward"):
        _C.deform_conv_forward()


def test_mmcv_ext_placeholder_satisfies_mmcv_loader_but_fails_on_use() -> None:
    from transfer import compat

    if not compat.apply()["mmcv_missing_ext"]:
        pytest.skip("full mmcv with compiled ops is installed")
    from mmcv.utils import ext_loader

    ext = ext_loader.load_ext("_ext", ["ms_deform_attn_forward"])
    with pytest.raises(compat.MissingCompiledOpError, match="ms_deform_attn_forward"):
        ext.ms_deform_attn_forward()
