"""Which copy of the ResNet to read, when a file holds several.

EMA copies (timm's ``state_dict_ema``, ``model_ema``, ``ema_*``) only when ``--prefix`` names them;
a student and a teacher: the teacher (DINO and the self-distillation methods after it evaluate the
teacher); an online/query encoder and its momentum/target/key copy: the online one (MoCo, BYOL
and SimSiam evaluate it), except that a momentum copy trained by self-distillation is the teacher
(the file has DINO's weight-normalised prototype layer, ``last_layer.weight_g``, as solo-learn's
DINO writes its teacher as ``momentum_backbone``). Plain names (``backbone`` and
``momentum_backbone``) only say which is online when the file shows its method (a predictor:
BYOL/SimSiam; a queue or memory bank: MoCo; a DINO head); otherwise, as for any other two
copies, the choice is refused and the prefixes are listed for ``--prefix``. The rule applied is
stated in ``meta["copy"]``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pretrain.checkpoint import CheckpointError
from pretrain.foreign.messages import preview
from pretrain.foreign.naming import CAFFE2_KEY, candidates

# Evidence of the method that trained a file, from keys anywhere in its container.
DINO_HEAD = re.compile(
    r"(^|\.)last_layer\.(weight_g|weight_v|parametrizations\.weight\.original[01])$")
PREDICTOR = {"predictor", "prediction_head", "predictor_head"}
MOCO_QUEUE = {"queue", "queue_ptr", "memory_bank"}


def _role(where: str) -> str:
    """What a copy's key path says it is: ema, teacher, student, momentum, online or plain."""
    lowered = where.lower()
    tokens = set(re.split(r"[._]", lowered))
    if "ema" in tokens:
        return "ema"
    for role, marks in (("teacher", ("teacher",)), ("student", ("student",)),
                        ("momentum", ("momentum", "target", "encoder_k", "key_encoder")),
                        ("online", ("online", "encoder_q", "base_encoder", "query"))):
        if any(m in tokens or ("_" in m and m in lowered) for m in marks):
            return role
    return "plain"


def _method_evidence(tensors: dict[tuple[str, str], Any], container: str) -> tuple[str, str]:
    """(family, the key that shows it) from the heads beside the copies: self-distillation (a
    DINO head), online (a BYOL/SimSiam predictor, a MoCo queue), or ("", "") when the keys show
    none or both."""
    found: dict[str, str] = {}
    for c, key in tensors:
        if c != container:
            continue
        parts = set(key.split("."))
        if DINO_HEAD.search(key):
            found.setdefault("self-distillation", key)
        elif parts & PREDICTOR or parts & MOCO_QUEUE:
            found.setdefault("online", key)
    return next(iter(found.items())) if len(found) == 1 else ("", "")


def choose(path: Path, tensors: dict[tuple[str, str], Any], prefix: str | None,
           deep: str) -> tuple[str, str, str, str]:
    """(container, prefix, naming, the rule that chose it) of the backbone to read."""
    keys = [c + k for c, k in tensors]
    if any(CAFFE2_KEY.match(k) for _, k in tensors):
        raise CheckpointError(
            f"{path}: Caffe2/Detectron-style names (e.g. res2_0_branch2a_w): such weights expect "
            "BGR input and stride in the 1x1 conv, so they are not a torchvision ResNet. Use them "
            "with detectron2's own MSRA configs directly; the suite reads torchvision-style "
            "ResNets")
    found_copies = candidates(tensors)
    found = ", ".join(repr(c[0] + c[1]) for c in found_copies) or "none"
    if prefix is not None:
        named = [c for c in found_copies if c[0] + c[1] == prefix] or \
            [c for c in found_copies if c[1] == prefix]
        if not named:
            raise CheckpointError(
                f"{path}: no ResNet keys under --prefix {prefix!r} (no '{prefix}layer1.0.conv1."
                f"weight' or equivalent). ResNets found under: {found}; first keys: "
                f"{preview(keys)}")
        if len(named) > 1:
            raise CheckpointError(f"{path}: --prefix {prefix!r} matches several ResNets: "
                                  f"{', '.join(repr(c[0] + c[1]) for c in named)}; give the "
                                  "whole path")
        return (*named[0], f"{named[0][0] + named[0][1]!r}, chosen by --prefix")
    if not found_copies:
        raise CheckpointError(
            f"{path}: no ResNet backbone found (no 'layer1.0.conv1.weight', 'res2.0.conv1.weight' "
            f"or '4.0.conv1.weight' under any prefix){deep}. Keys: {preview(keys)}"
            + (" - only a classifier head?" if keys and all(".fc." in f".{k}" for k in keys)
               else ""))
    chosen, rule = _pick(path, tensors, found_copies)
    return (*chosen, rule)


def _pick(path: Path, tensors: dict[tuple[str, str], Any],
          candidates: list[tuple[str, str, str]]) -> tuple[tuple[str, str, str], str]:
    """The copy a known rule selects (see the module docstring), and the rule in words."""
    name = {c: repr(c[0] + c[1]) if c[0] + c[1] else "the top-level keys" for c in candidates}
    ema = [c for c in candidates if _role(c[0] + c[1]) == "ema"]
    kept = [c for c in candidates if c not in ema]
    ignored = f"; EMA copy {', '.join(name[c] for c in ema)} not used (--prefix chooses it)" \
        if ema else ""
    if not kept:
        raise CheckpointError(f"{path}: its only ResNet is the EMA copy {name[ema[0]]}, which "
                              "is read only when asked: pass --prefix " + name[ema[0]])
    if len(kept) == 1:
        return kept[0], f"{name[kept[0]]}, the only copy{ignored}"
    roles = {_role(c[0] + c[1]): c for c in kept}
    if len(kept) == 2 and set(roles) == {"teacher", "student"}:
        return roles["teacher"], (f"the teacher {name[roles['teacher']]} (self-distillation: "
                                  f"DINO evaluates the teacher; the student "
                                  f"{name[roles['student']]} is not used){ignored}")
    online = roles.get("online") or roles.get("plain")
    if len(kept) == 2 and "momentum" in roles and online:
        family, key = _method_evidence(tensors, online[0])
        named_online = "online" in roles
        momentum = roles["momentum"]
        if family == "self-distillation" and not named_online:
            return momentum, (f"the momentum copy {name[momentum]}, the teacher (the file "
                              f"has a DINO head, '{key}': self-distillation evaluates the "
                              f"teacher; the student {name[online]} is not used){ignored}")
        if named_online and family != "self-distillation" or family == "online":
            why = f"its head '{key}'" if family else "the names"
            return online, (f"the online encoder {name[online]} (MoCo/BYOL/SimSiam evaluate "
                            f"it, shown by {why}; the momentum copy {name[momentum]} is not "
                            f"used){ignored}")
        raise CheckpointError(
            f"{path}: two copies of the ResNet, {name[online]} and {name[momentum]}, and the "
            "file does not show which method trained it: MoCo and BYOL evaluate the online one, "
            "DINO-style self-distillation the momentum teacher. Pick one with --prefix")
    raise CheckpointError(
        f"{path}: several ResNets in one file, under {', '.join(name[c] for c in kept)}, and no "
        "known rule says which one is evaluated; pick one with --prefix (the part of the key "
        f"before 'conv1.weight'){ignored}")

