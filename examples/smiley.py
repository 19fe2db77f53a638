"""Design the standard smiley: 50 x 50 cells squeezed from both sides so that a mouth and two eyes appear.

Usage: ``python examples/smiley.py [OUT]`` (default ``./out-smiley``). Several minutes on 2 cores: the
full-scale check solves a 2500 x 2500-pixel structure.
"""

import sys
from pathlib import Path

import metasys

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out-smiley")
design = metasys.design(metasys.problems.smiley(), seed=0, log=print)

report = design.report()
print(f"full-scale RRMSE {report['rrmse_full']:.4f} (macro {report['rrmse_macro']:.4f}), "
      f"{report['n_components']} solid component(s), theta_G = 0 on {report['theta_G_zero_fraction']:.1%} "
      f"of neighbour pairs, {report['timings']['total']:.0f} s in all")

design.save(out)                                          # report.json, problem.json, structure.npy, design.npz
design.export(out / "structure.png")                      # one image pixel per structure pixel
design.export(out / "deformed.png", deformed=True)        # full-scale deformed shape over the target
design.export(out / "structure.stl", thickness=0.1)       # closed mesh for 3D printing (cell side 1)
design.export(out / "structure.vtu")                      # pixel mesh with displacements, for ParaView
print(f"wrote {out}/")
