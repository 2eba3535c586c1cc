"""Keypoint layouts: point names, the left/right swap a horizontal flip needs, and the points
that normalise errors (NME).

"Left" and "right" are the subject's, as in both the Kaggle data and iBUG's 68 points, so a
mirror image swaps them.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    name: str
    names: tuple[str, ...]          # one name per point
    flip_pairs: tuple[tuple[int, int], ...]  # points that trade places under a mirror
    eye_corners: tuple[int, int] | None  # outer eye corners, the NME normaliser

    @property
    def num_points(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> list[int]:
        """perm such that flipped_points = mirror(points)[perm]."""
        perm = list(range(self.num_points))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


KAGGLE15 = Layout(
    name="kaggle15",
    names=(
        "left_eye_center", "right_eye_center",
        "left_eye_inner_corner", "left_eye_outer_corner",
        "right_eye_inner_corner", "right_eye_outer_corner",
        "left_eyebrow_inner_end", "left_eyebrow_outer_end",
        "right_eyebrow_inner_end", "right_eyebrow_outer_end",
        "nose_tip", "mouth_left_corner", "mouth_right_corner",
        "mouth_center_top_lip", "mouth_center_bottom_lip",
    ),
    flip_pairs=((0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)),
    eye_corners=(3, 5),
)


def _ibug68_pairs() -> tuple[tuple[int, int], ...]:
    pairs = [(i, 16 - i) for i in range(8)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                 # brows
    pairs += [(31, 35), (32, 34)]                                 # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]   # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]                       # inner lips
    return tuple(pairs)


IBUG68 = Layout(
    name="ibug68",
    names=tuple(f"p{i}" for i in range(68)),
    flip_pairs=_ibug68_pairs(),
    eye_corners=(36, 45),
)

LAYOUTS = {"kaggle15": KAGGLE15, "ibug68": IBUG68}

# How the Kaggle 15 points come from the 68 (as the proxy data was made): an index, or a
# tuple of indices to average.
KAGGLE15_FROM_68 = (
    (42, 43, 44, 45, 46, 47), (36, 37, 38, 39, 40, 41),
    42, 45, 39, 36, 22, 26, 21, 17, 30, 54, 48, 51, 57,
)


# Where the web-faces' 21 points fall among the 68 (AFLW index: iBUG index). Measured, not taken
# from the data's README (whose order does not match the file): the shipped landmarks68 net placed
# the 68 points on 300 web-faces faces of 60 px or more, and each of these 16 points lies nearest,
# by median, to the iBUG point given (0.03-0.07 of the eye-corner distance away). Left out: the
# nose's sides (10, 12: 0.10 away, the alar wings rather than iBUG's nostril corners), the mouth's
# middle (14: between 62 and 66) and the eye centres (16, 17), which iBUG has no point for.
WEB21_TO_68 = {0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 7: 39, 8: 42, 9: 45,
               11: 33, 13: 51, 15: 57, 18: 30, 19: 48, 20: 54}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint layout {name!r}; known: {', '.join(LAYOUTS)}") from None
