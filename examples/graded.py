"""Design the graded beam: 40 x 15 cells squeezed into a barrel bulge, built from one metamaterial family.

The ``graded`` problem runs in family mode: families are found on the gradation of the VAE paper's
Eq. 7 (``metasys.paper_gradation()``), each is designed along its own property curve, and the one
with the best full-scale result is kept.

Usage: ``python examples/graded.py [OUT]`` (default ``./out-graded``); about five minutes on 2 cores.
"""

import sys
from pathlib import Path

import metasys

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out-graded")
design = metasys.design(metasys.problems.graded(), family=metasys.paper_gradation(), seed=0, log=print)

report = design.report()
for n, family in enumerate(report["families"], 1):
    print(f"family {n}: {family['members']} members, full-scale RRMSE {family['rrmse_full']:.4f}"
          + ("  <- kept" if family["chosen"] else ""))
print(f"full-scale RRMSE {report['rrmse_full']:.4f} (macro {report['rrmse_macro']:.4f}), "
      f"{report['n_components']} solid component(s), theta_G = 0 on {report['theta_G_zero_fraction']:.1%} "
      f"of neighbour pairs, {report['timings']['total']:.0f} s in all")

design.save(out)                                          # report.json, problem.json, structure.npy, design.npz
design.export(out / "structure.png")                      # one image pixel per structure pixel
design.export(out / "deformed.png", deformed=True)        # full-scale deformed shape over the target
design.export(out / "structure.stl", thickness=0.1)       # closed mesh for 3D printing (cell side 1)
design.export(out / "structure.vtu")                      # pixel mesh with displacements, for ParaView
print(f"wrote {out}/")
