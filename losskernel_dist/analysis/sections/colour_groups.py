"""Colour groups of an image task: mean RGB per image, farthest-point centres, nearest centre.

The groups become one more per-sample attribute (``colour_group``) that the
maps colour by and the attribute lift tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...config import AnalysisConfig
from ..attributes import farthest_point_groups, mean_rgb
from ..registry import analysis
from ..section import Section
from ..thumbnails import IMAGE_ATTRIBUTE

ATTRIBUTE = "colour_group"


@dataclass
class ColourGroupsSection(Section):
    """Each sample's colour group, or None for a task without images."""

    groups: np.ndarray | None = None

    def attributes_with(self, attributes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The run's attributes plus ``colour_group`` (last) when there are colour groups."""
        out = dict(attributes)
        if self.groups is not None:
            out[ATTRIBUTE] = self.groups
        return out


@analysis(report="lift", title="Colour groups")
def colour_groups(settings: AnalysisConfig,
                  attributes: Mapping[str, np.ndarray]) -> ColourGroupsSection:
    """Group the images by mean colour (analysis.colour_groups groups)."""
    images = attributes.get(IMAGE_ATTRIBUTE)
    if images is None:
        return ColourGroupsSection(
            skipped={"colour_groups": f"no '{IMAGE_ATTRIBUTE}' attribute (not an image task)"})
    rgb = mean_rgb(images)
    centres, groups = farthest_point_groups(rgb, settings.colour_groups, settings.seed)
    return ColourGroupsSection(
        numbers={
            "groups": int(len(centres)),
            "method": "mean RGB per image, farthest-point sampling of centres, nearest centre",
            "centres_rgb": rgb[centres].round(4).tolist(),
            "sizes": np.bincount(groups, minlength=len(centres)).tolist(),
        },
        groups=groups,
    )
