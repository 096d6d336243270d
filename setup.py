"""Downstream-transfer benchmark suite for self-supervised ResNet backbones.

Importable packages: ``pretrain``, ``transfer``, ``benchmarks``. ``datasets/`` holds preparation
scripts only and is deliberately NOT a package (it would shadow Hugging Face ``datasets``).

Console scripts (``ssl-`` keeps them apart from other tools' ``convert``, ``linear``, ...): each is
the module's ``python -m`` command; see README.md for the command lines.

Extras:
  convert    - checkpoint conversion only (torch + numpy + safetensors)
  detection  - what detectron2 0.6 imports (detectron2 itself is placed by tools/bootstrap.sh)
  pose       - the mmpose 1.3.2 stack (mmpose itself is installed --no-deps by tools/bootstrap.sh)
  cluster    - submitit, for running the suite's stages as Slurm jobs
  dev        - tests and lint, plus timm and lightly, whose own checkpoints the import tests write
"""
from setuptools import find_packages, setup

CORE = [
    "torch>=2.1",
    "torchvision>=0.16",
    "numpy>=1.24",
    "pillow>=9",
    "safetensors>=0.4",
    "tqdm",
    "tensorboard",
    "pyyaml",
    "scikit-learn",
    "matplotlib",
    "scipy",
]
DETECTION = [
    "pycocotools>=2.0.7",
    "fvcore>=0.1.5",
    "iopath",
    "omegaconf",
    "hydra-core",
    "tabulate",
    "termcolor",
    "yacs",
    "cloudpickle",
    "opencv-python",
]
POSE = [
    "mmengine==0.10.7",
    "mmcv-lite==2.1.0",
    "mmdet==3.3.0",
    "json_tricks",
    "munkres",
    "six",
    "opencv-python",
    "Cython",
]
CLUSTER = ["submitit==1.5.4"]
CONSOLE_SCRIPTS = [
    "ssl-pretrain = pretrain.train:main",
    "ssl-convert = transfer.convert:main",
    "ssl-coco-det = transfer.coco_det:main",
    "ssl-voc-det = transfer.voc_det:main",
    "ssl-semseg = transfer.semseg:main",
    "ssl-mpii-pose = transfer.mpii_pose:main",
    "ssl-colorful-mnist = benchmarks.probes.colorful_mnist:cli",
    "ssl-fairface = benchmarks.probes.fairface:cli",
    "ssl-coco-fgbg = benchmarks.probes.coco_fgbg:cli",
    "ssl-linear = benchmarks.probes.linear:cli",
    "ssl-suite = benchmarks.runner.suite:main",
    "ssl-leaderboard = benchmarks.results.leaderboard_cli:main",
    "ssl-speed = benchmarks.runner.speed_cli:main",
]

setup(
    name="ssl-transfer-suite",
    version="0.1.0",
    description="Pretrain SSL ResNets with shortcut regularizers and benchmark their transfer",
    python_requires=">=3.10",
    packages=find_packages(include=["pretrain", "pretrain.*", "transfer", "transfer.*",
                                    "benchmarks", "benchmarks.*"]),
    package_data={"transfer": ["configs/*.yaml", "configs/*.py"], "benchmarks.results": ["*.csv"],
                  "benchmarks.runner": ["*.json"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    install_requires=["torch>=2.1", "numpy>=1.24", "safetensors>=0.4"],
    extras_require={
        "convert": [],
        "train": CORE,
        "detection": CORE + DETECTION,
        "pose": CORE + POSE,
        "cluster": CLUSTER,
        "all": CORE + DETECTION + POSE + CLUSTER,
        "dev": ["pytest>=7", "pytest-xdist>=3.5", "ruff", "timm==1.0.31", "lightly==1.6.0"],
    },
)
