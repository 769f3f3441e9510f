"""SMPL's skeleton: its 24 joints in SMPL order, their names, and the kinematic tree that links them.

Poses are (T, 72) axis-angle values, three per joint in this order; segmentation labels are joint index + 1.
"""

from __future__ import annotations

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)  # 24
# The parent of each joint (-1 for the root, the pelvis); a parent always comes before its children.
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
