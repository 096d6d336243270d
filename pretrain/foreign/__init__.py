"""Reading a ResNet backbone from any supported checkpoint, without executing code from the file.

:func:`read_source` returns the backbone as a torchvision-keyed ResNet state_dict (no ``fc.*``,
float32), the same tensors under the file's own names (for the self-check against the network as
its library builds it), and its metadata; :func:`read_backbone` returns the first and the last.
The source may be the suite's backbone checkpoint or a ResNet trained elsewhere. One job per
module:

- :mod:`~pretrain.foreign.reading`: the file, read without running code and bounded in size
  before anything is allocated (:func:`load_training_file`, the allow-list reader, is also what
  other stages use for a training file from elsewhere);
- :mod:`~pretrain.foreign.walk`: nested containers (``state_dict``, ``model``, VISSL's
  ``classy_state_dict.base_model.model.trunk``, ...), each once and at most :data:`MAX_DEPTH`
  deep, and each backbone tensor checked where it enters;
- :mod:`~pretrain.foreign.naming`: the three key namings (torchvision, lightly's
  ``nn.Sequential``, detectron2) and the library that wrote the file;
- :mod:`~pretrain.foreign.copies`: which copy, when a file holds several (EMA, teacher/student,
  online/momentum);
- :mod:`~pretrain.foreign.claims`: what the file says about its network (arch, model name, an
  mmengine config's type/depth/style/stem), checked against its tensors, and the stem geometry;
- :mod:`~pretrain.foreign.stride`: the stride convention of a bottleneck ResNet;
- :mod:`~pretrain.foreign.source`: the pieces put together.

No engine is imported here: writing engine formats and verifying them is ``transfer/convert.py``'s.
"""
from pretrain.foreign.messages import parse_bool, preview
from pretrain.foreign.reading import (
    EXPORT_HINTS,
    MAX_FILE_BYTES,
    TRAINING_FILE_GLOBALS,
    check_zip_bounds,
    load_training_file,
)
from pretrain.foreign.source import ForeignBackbone, read_backbone, read_source, resnet_skeleton
from pretrain.foreign.stride import STRIDE_CONVENTIONS
from pretrain.foreign.walk import MAX_DEPTH, MAX_ENTRIES

__all__ = ["EXPORT_HINTS", "MAX_DEPTH", "MAX_ENTRIES", "MAX_FILE_BYTES",
           "STRIDE_CONVENTIONS", "TRAINING_FILE_GLOBALS", "ForeignBackbone", "check_zip_bounds",
           "load_training_file", "parse_bool", "preview", "read_backbone", "read_source",
           "resnet_skeleton"]
