"""The shortcut gap of each leaderboard task that has one: the leaderboard's gap column, the
report's claims and pictures, and the probes' summary read it (here, not in the runner's task
table, which the torch-free results never import).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    """A task's shortcut gap: mean of ``plus`` metrics minus mean of ``minus`` metrics. A large
    negative gap: the backbone learned the easy cue (background, race, context), not the other."""

    name: str
    plus: tuple[str, ...]
    minus: tuple[str, ...]

    def of(self, means: Mapping[str, float]) -> float | None:
        """The gap of one result (metric -> mean); None when a metric it needs is absent."""
        if not all(m in means for m in self.plus + self.minus):
            return None
        return (sum(means[m] for m in self.plus) / len(self.plus)
                - sum(means[m] for m in self.minus) / len(self.minus))


GAPS = {
    "fairface": Gap("age,gender-race", ("age_top1", "gender_top1"), ("race_top1",)),
    "colorful_mnist": Gap("digit-bkgd", ("digit_top1",), ("background_top1",)),
    "coco_fgbg": Gap("fg-full", ("train_fg_test_fg_top1",), ("train_full_test_full_top1",)),
    # the synthetic VOC set: AP50 on test backgrounds minus AP50 on the training backgrounds
    "voc_det": Gap("test-home", ("bbox_AP50",), ("home_bbox_AP50",)),
}


def gap_of(task: str) -> Gap | None:
    """The shortcut gap of the leaderboard task ``task``, if it has one."""
    return GAPS.get(task)
