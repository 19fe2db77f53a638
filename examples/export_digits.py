"""Export scikit-learn's handwritten digits as an image stack for ``metasys train diffusion --images``.

    python examples/export_digits.py digits.npy            # (1797, 8, 8) float32, 1 = solid, stroke = void
    python examples/export_digits.py digits.npy --stroke solid

Source: ``sklearn.datasets.load_digits()`` -- 1797 8 x 8 images (values 0..16, ink = 16) of the UCI "Optical
Recognition of Handwritten Digits" test set, shipped inside scikit-learn (BSD 3-clause licence; the UCI data
are CC BY 4.0). Nothing is downloaded; the stack is the same for every scikit-learn release that ships the file.

What the stack holds (metasys conventions, docs/style.md):

- values in [0, 1] with 1 = solid (the stiff phase, density 1 after ``images_to_density``);
- by default the ink is *void* (``1 - ink / 16``): as in the noise-optimization paper, whose density is
  ``1 - P(x0)`` for its MNIST prior, the digit is the soft phase and the background the stiff matrix, so every
  cell is one connected, periodic solid with a digit-shaped hole (ink = solid would leave a digit floating in
  void: no stiffness, no connection to the neighbours);
- rows flipped so that row 0 is the bottom (a digit stands upright in ``imshow(..., origin="lower")``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def digits_stack(stroke: str = "void") -> np.ndarray:
    """(1797, 8, 8) float32 in [0, 1], row 0 at the bottom; ``stroke`` = "void" (default) or "solid"."""
    from sklearn.datasets import load_digits

    if stroke not in ("void", "solid"):
        raise ValueError(f"stroke: expected 'void' or 'solid', got {stroke!r}")
    ink = load_digits().images.astype(np.float64) / 16.0          # (1797, 8, 8), 1 = ink, row 0 = top
    stack = ink if stroke == "solid" else 1.0 - ink
    return np.ascontiguousarray(stack[:, ::-1, :], dtype=np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .npy file to write")
    parser.add_argument("--stroke", choices=("void", "solid"), default="void", help="phase of the ink (default: void)")
    args = parser.parse_args(argv)
    stack = digits_stack(args.stroke)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, stack)
    print(f"{args.out}: {stack.shape[0]} images {stack.shape[1]} x {stack.shape[2]}, stroke {args.stroke}, "
          f"mean density {stack.mean():.3f}")


if __name__ == "__main__":
    main()
