"""Spherical-harmonics lighting (Ramamoorthi-Hanrahan), as SURREAL shades its bodies."""

from __future__ import annotations

import numpy as np

SH_CONSTANTS = (0.429043, 0.511664, 0.743125, 0.886227, 0.247708)  # Ramamoorthi-Hanrahan c1..c5


def sh_weights(light: tuple[float, ...] | np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Fold the 9 SH coefficients and c1..c5 into E(n) = a0 + a.n + b.(n*n) + d.(xy, yz, zx).

    Ramamoorthi-Hanrahan: E = c1 L22 (x^2 - y^2) + c3 L20 z^2 + c4 L00 - c5 L20
                              + 2 c1 (L2-2 xy + L21 xz + L2-1 yz) + 2 c2 (L11 x + L1-1 y + L10 z).
    """
    L = np.asarray(light, dtype=np.float64)
    c1, c2, c3, c4, c5 = SH_CONSTANTS
    a0 = c4 * L[0] - c5 * L[6]
    a = 2 * c2 * np.array([L[3], L[1], L[2]])
    b = np.array([c1 * L[8], -c1 * L[8], c3 * L[6]])
    d = 2 * c1 * np.array([L[4], L[5], L[7]])
    return float(a0), a, b, d


def sh_irradiance(light: tuple[float, ...] | np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The same irradiance in numpy, for tests and checks: normals (..., 3) in the camera frame."""
    a0, a, b, d = sh_weights(light)
    n = np.asarray(normals, dtype=np.float64)
    swz = n[..., [1, 2, 0]]
    return a0 + n @ a + (n * n) @ b + (n * swz) @ d
