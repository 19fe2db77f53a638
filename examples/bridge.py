"""Design the standard bridge (30 x 4 cells whose top and bottom edges rise as an arch when the span is shortened).

Usage: ``python examples/bridge.py [OUT]`` (default ``./out-bridge``); about two minutes on 2 cores.
"""

import sys
from pathlib import Path

import metasys

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out-bridge")
design = metasys.design(metasys.problems.bridge(), seed=0, log=print)

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
