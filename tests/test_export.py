"""Tests of metasys.pipeline.export: npy/png/svg/vtu/stl exports of a pixel structure (row 0 at the bottom)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from metasys.problems import Problem
from scipy import ndimage

from metasys.errors import FileFormatError, InvalidTypeError, InvalidValueError
from metasys.io import load_cell
from metasys.pipeline import export as ex

# two pixels touching only at a corner, both orientations, plus a ring with a hole and a diagonal contact
DIAGONAL = np.array([[1, 0], [0, 1]], dtype=bool)
ANTI_DIAGONAL = np.array([[0, 1], [1, 0]], dtype=bool)
RING = np.array([[1, 1, 1, 0],
                 [1, 0, 1, 0],
                 [1, 1, 1, 0],
                 [0, 0, 0, 1]], dtype=bool)[::-1]
# a ring closed only through a diagonal contact: one C-shaped part whose outline touches itself
PINCHED = np.array([[0, 1, 1],
                    [1, 0, 1],
                    [1, 1, 1]], dtype=bool)[::-1]


def random_structures(n=40, seed=0):
    rng = np.random.default_rng(seed)
    out = [DIAGONAL, ANTI_DIAGONAL, RING, PINCHED, np.ones((3, 5), dtype=bool), np.eye(6, dtype=bool)]
    for _ in range(n):
        ny, nx = rng.integers(1, 14, 2)
        s = rng.random((ny, nx)) < rng.uniform(0.3, 0.8)
        if s.any():
            out.append(s)
    return out


def holes(s):
    """Holes of the solid (4-connected solid, so 8-connected void regions not reaching the border)."""
    return ndimage.label(np.pad(~s, 1, constant_values=True), structure=np.ones((3, 3)))[1] - 1


def no_temp_files(directory):
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------------
# npy, png


def test_npy_round_trip(tmp_path):
    s = np.random.default_rng(1).random((100, 150)) < 0.5
    path = ex.export_structure(s, tmp_path / "s.npy")
    back = ex.read_npy(path)
    assert back.dtype == bool and np.array_equal(back, s)
    assert np.array_equal(np.load(path), s)
    # 0/1 integers are accepted and stored as bool
    ex.write_npy(s.astype(np.uint8), tmp_path / "u.npy")
    assert np.load(tmp_path / "u.npy").dtype == bool
    assert no_temp_files(tmp_path)


def test_read_npy_errors(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        ex.read_npy(tmp_path / "missing.npy")
    np.save(tmp_path / "bad.npy", np.full((3, 3), 0.5))
    with pytest.raises(FileFormatError, match="bool or 0/1"):
        ex.read_npy(tmp_path / "bad.npy")


def test_png_orientation(tmp_path):
    from PIL import Image

    s = np.zeros((50, 100), dtype=bool)
    s[0] = True  # bottom row solid
    path = ex.export_structure(s, tmp_path / "s.png")
    with Image.open(path) as img:
        assert img.size == (100, 50) and img.mode == "L"
        a = np.asarray(img)
    assert (a[-1] == 0).all() and (a[:-1] == 255).all()  # dark pixels at the bottom of the image
    assert np.array_equal(ex.read_png(path), s)
    assert np.array_equal(load_cell(path) > 0.5, s)  # consistent with metasys.io.save_cell/load_cell


def small_problem():
    # 2 x 1 cells: left edge fixed in x, right edge pulled, targets u_y on the top edge
    from metasys.fem.boundary import Prescribed

    conditions = [Prescribed("left", "x", 0.0), Prescribed("right", "x", -0.1), Prescribed((0, 0), "y", 0.0)]
    return Problem.from_targets(2, 1, conditions, [("top", "y", [0.0, 0.05, 0.0])], name="tiny")


def test_png_deformed(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    s = rng.random((50, 100)) < 0.7
    y, x = np.mgrid[0:51, 0:101] / 50.0
    u = np.stack([-0.05 * x, 0.05 * np.sin(np.pi * x / 2) * y], axis=2)
    u[0, 0] = np.nan  # a node outside the model
    path = ex.export_structure(s, tmp_path / "d.png", deformed=True, displacement=u, problem=small_problem(), scale=2.0)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 500
        a = np.asarray(img.convert("RGB")).astype(int)
    assert (np.abs(a[..., 0] - a[..., 2]) > 60).any()  # the coloured deformed solid is drawn
    with pytest.raises(InvalidValueError, match="displacement: deformed=True needs"):
        ex.export_structure(s, tmp_path / "e.png", deformed=True)
    with pytest.raises(InvalidValueError, match=r"displacement: expected shape \(51, 101, 2\)"):
        ex.export_structure(s, tmp_path / "e.png", deformed=True, displacement=u[:-1])
    with pytest.raises(InvalidValueError, match="problem: a 2 x 1 grid needs a structure of shape"):
        ex.export_structure(s[:, :50], tmp_path / "e.png", deformed=True, displacement=u[:, :51], problem=small_problem())
    assert not (tmp_path / "e.png").exists() and no_temp_files(tmp_path)


# --------------------------------------------------------------------------------------------------
# svg


def parse_svg(path):
    root = ET.parse(path).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    paths = root.findall("svg:path", ns)
    assert len(paths) == 1 and paths[0].get("fill-rule") == "evenodd"
    _, _, vw, vh = (int(v) for v in root.get("viewBox").split())
    loops, commands, cur = [], [], None
    for cmd, arg in re.findall(r"([MHVZ])([^MHVZ]*)", paths[0].get("d")):
        if cmd == "M":
            x, y = (int(v) for v in arg.split())
            cur = [(x, y)]
            commands.append([])
        elif cmd == "H":
            cur.append((int(arg), cur[-1][1]))
            commands[-1].append(cmd)
        elif cmd == "V":
            cur.append((cur[-1][0], int(arg)))
            commands[-1].append(cmd)
        else:
            loops.append(np.array(cur))
    # back to y up
    return root, [np.stack([lp[:, 0], vh - lp[:, 1]], axis=1) for lp in loops], commands, (vh, vw)


def shoelace(lp):
    x, y = lp[:, 0], lp[:, 1]
    return 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)


def evenodd_fill(loops, shape):
    """Even-odd fill of the polygons at the pixel centres (ray casting to +x)."""
    ny, nx = shape
    yc, xc = np.mgrid[0:ny, 0:nx] + 0.5
    crossings = np.zeros(shape, dtype=int)
    for lp in loops:
        a, b = lp, np.roll(lp, -1, axis=0)
        vertical = a[:, 0] == b[:, 0]
        for (x0, y0), (_, y1) in zip(a[vertical], b[vertical]):
            lo, hi = min(y0, y1), max(y0, y1)
            crossings += (x0 > xc) & (yc > lo) & (yc < hi)
    return crossings % 2 == 1


def test_svg_loops_area_and_fill(tmp_path):
    for k, s in enumerate(random_structures()):
        path = ex.write_svg(s, tmp_path / f"s{k}.svg")
        _, loops, commands, shape = parse_svg(path)
        assert shape == s.shape
        areas = np.array([shoelace(lp) for lp in loops])
        assert areas.sum() == s.sum()  # outer boundaries counter-clockwise (y up), holes clockwise
        assert np.array_equal(evenodd_fill(loops, s.shape), s)
        for lp, cmds in zip(loops, commands):
            assert len(lp) >= 4 and len(lp) % 2 == 0
            # collinear edges merged: moves alternate, and the closing move differs from the last one
            assert all(a != b for a, b in zip(cmds, cmds[1:]))
            assert lp[0][1] == lp[-1][1] if cmds[-1] == "V" else lp[0][0] == lp[-1][0]
            # a loop meets itself only at a diagonal contact (it cannot cross: the solid is 4-connected)
            pts, counts = np.unique(lp, axis=0, return_counts=True)
            for x, y in pts[counts > 1]:
                assert counts.max() == 2
                block = np.pad(s, 1)[y:y + 2, x:x + 2]
                assert block[0, 0] == block[1, 1] != block[0, 1] == block[1, 0]
    assert no_temp_files(tmp_path)


def test_svg_specific_cases(tmp_path):
    _, loops, _, _ = parse_svg(ex.write_svg(DIAGONAL, tmp_path / "d.svg"))
    assert sorted(shoelace(lp) for lp in loops) == [1.0, 1.0]  # diagonal contact: two separate squares
    _, loops, _, _ = parse_svg(ex.write_svg(RING, tmp_path / "r.svg"))
    assert sorted(shoelace(lp) for lp in loops) == [-1.0, 1.0, 9.0]  # ring, its hole, the lone corner pixel
    _, loops, _, _ = parse_svg(ex.write_svg(PINCHED, tmp_path / "p.svg"))
    assert len(loops) == 1 and shoelace(loops[0]) == 7 and len(loops[0]) == 10  # passes corner (1, 2) twice
    _, loops, _, _ = parse_svg(ex.write_svg(np.ones((20, 30), dtype=bool), tmp_path / "f.svg"))
    assert len(loops) == 1 and len(loops[0]) == 4  # a full rectangle is a single 4-corner path
    root, _, _, _ = parse_svg(ex.write_svg(np.ones((20, 30), dtype=bool), tmp_path / "mm.svg", pixel_size=0.5, unit="mm"))
    assert root.get("width") == "15mm" and root.get("height") == "10mm"
    # SVG y points down: a bottom-row solid is drawn at the bottom of the picture (y from 19 to 20)
    s = np.zeros((20, 30), dtype=bool)
    s[0] = True
    text = ex.write_svg(s, tmp_path / "b.svg").read_text()
    assert 'd="M0 20H30V19H0Z"' in text or re.search(r'd="M\d+ (19|20)', text)
    _, loops, _, _ = parse_svg(tmp_path / "b.svg")
    assert {tuple(v) for v in loops[0]} == {(0, 0), (30, 0), (30, 1), (0, 1)}
    # an empty structure gives a valid, empty drawing
    _, loops, _, _ = parse_svg(ex.write_svg(np.zeros((3, 3), dtype=bool), tmp_path / "e.svg"))
    assert loops == []


# --------------------------------------------------------------------------------------------------
# vtu


def test_vtu_round_trip(tmp_path):
    import meshio

    rng = np.random.default_rng(3)
    s = rng.random((100, 150)) < 0.6
    u = rng.standard_normal((101, 151, 2))
    path = ex.export_structure(s, tmp_path / "s.vtu", displacement=u)
    m = meshio.read(path)
    quads = m.cells_dict["quad"]
    assert len(quads) == s.sum()
    used = np.round(m.points[:, 1] * 50).astype(int) * 151 + np.round(m.points[:, 0] * 50).astype(int)
    assert len(np.unique(used)) == len(m.points)  # points shared between neighbouring pixels
    r, c = np.nonzero(s)
    corners = np.stack([r * 151 + c, r * 151 + c + 1, (r + 1) * 151 + c + 1, (r + 1) * 151 + c], axis=1)
    assert len(m.points) == len(np.unique(corners))
    np.testing.assert_allclose(m.points[:, :2], np.stack([used % 151, used // 151], axis=1) / 50)
    np.testing.assert_array_equal(m.points[:, 2], 0)
    # quads counter-clockwise, unit pixel area (1/50)^2
    p = m.points[quads][..., :2]
    area = 0.5 * np.sum(p[:, :, 0] * np.roll(p[:, :, 1], -1, axis=1) - np.roll(p[:, :, 0], -1, axis=1) * p[:, :, 1], axis=1)
    np.testing.assert_allclose(area, 1 / 2500)
    disp = m.point_data["displacement"]
    assert disp.shape == (len(m.points), 3)
    np.testing.assert_allclose(disp[:, :2], u.reshape(-1, 2)[used])
    np.testing.assert_array_equal(disp[:, 2], 0)
    ci = m.cell_data["cell_index"][0]
    centre = p.mean(axis=1)
    np.testing.assert_array_equal(ci, np.floor(centre[:, 1]).astype(int) * 3 + np.floor(centre[:, 0]).astype(int))


def test_vtu_missing_displacement(tmp_path):
    import meshio

    s = np.ones((4, 6), dtype=bool)
    u = np.zeros((5, 7, 2))
    u[0, 0] = np.nan
    with pytest.raises(InvalidValueError, match="displacement: 1 of 24 solid pixels have a node without a displacement"):
        ex.write_vtu(s, tmp_path / "s.vtu", displacement=u)
    assert not (tmp_path / "s.vtu").exists() and no_temp_files(tmp_path)
    assert len(meshio.read(ex.write_vtu(s, tmp_path / "d.vtu", displacement=u, missing="drop")).cells_dict["quad"]) == 23
    m = meshio.read(ex.write_vtu(s, tmp_path / "n.vtu", displacement=u, missing="nan"))
    assert len(m.cells_dict["quad"]) == 24 and np.isnan(m.point_data["displacement"][:, 0]).sum() == 1
    m = meshio.read(ex.export_structure(s, tmp_path / "x.vtu", displacement=u, missing="drop"))
    assert len(m.cells_dict["quad"]) == 23
    m = meshio.read(ex.write_vtu(s, tmp_path / "p.vtu"))  # no displacement: geometry only
    assert "displacement" not in m.point_data


# --------------------------------------------------------------------------------------------------
# stl


def check_closed_manifold(tri):
    """Vertices merged by coordinates; every edge in exactly two triangles, once in each direction.

    Returns (Euler characteristic, signed volume, smallest triangle area).
    """
    v, inv = np.unique(tri.reshape(-1, 3), axis=0, return_inverse=True)
    f = inv.reshape(-1, 3)
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = directed[:, 0] * len(v) + directed[:, 1]
    assert len(np.unique(key)) == len(key), "an edge is used twice in the same direction"
    assert np.isin(directed[:, 1] * len(v) + directed[:, 0], key).all(), "an edge has a single triangle"
    undirected = np.unique(np.sort(directed, axis=1), axis=0)
    assert 2 * len(undirected) == len(directed)  # hence every edge in exactly two triangles
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return len(v) - len(undirected) + len(f), volume, area.min()


def test_stl_closed_manifold_outward(tmp_path):
    from stl import mesh

    for k, s in enumerate(random_structures(seed=5)):
        path = ex.write_stl(s, tmp_path / f"s{k}.stl", thickness=0.2, pixel_size=0.5)
        m = mesh.Mesh.from_file(str(path))
        tri = m.vectors.astype(float)
        chi, volume, min_area = check_closed_manifold(tri)
        components = ndimage.label(s)[1]
        assert chi == 2 * (components - holes(s))  # closed surfaces of genus = number of holes
        exact = s.sum() * 0.25 * 0.2
        ne, nw, sw, se = (np.pad(s, 1)[i:i + s.shape[0] + 1, j:j + s.shape[1] + 1] for i, j in ((1, 1), (1, 0), (0, 0), (0, 1)))
        n_split = int(((ne == sw) & (nw == se) & (ne != nw)).sum())
        assert volume > 0  # outward normals
        if n_split == 0:
            assert volume == pytest.approx(exact, rel=1e-6)
        else:  # each split corner cuts a sliver of at most offset * (row length + 1) pixels
            assert exact * (1 - 1e-6) - 2 * n_split * 0.01 * (s.shape[1] + 1) * 0.25 * 0.2 <= volume <= exact * (1 + 1e-6)
        assert min_area > 0
        # stored normals point outward too (numpy-stl recomputes them from the winding)
        centre = tri.mean(axis=1)
        n = m.normals / np.linalg.norm(m.normals, axis=1, keepdims=True)
        top, bottom = np.isclose(centre[:, 2], 0.2), np.isclose(centre[:, 2], 0)
        assert np.allclose(n[top], [0, 0, 1], atol=1e-5) and np.allclose(n[bottom], [0, 0, -1], atol=1e-5)
    assert no_temp_files(tmp_path)


def test_stl_diagonal_contact_is_split(tmp_path):
    from stl import mesh

    for s in (DIAGONAL, ANTI_DIAGONAL):
        tri = mesh.Mesh.from_file(str(ex.write_stl(s, tmp_path / "d.stl", thickness=1.0, pixel_size=1.0))).vectors.astype(float)
        chi, volume, _ = check_closed_manifold(tri)
        assert chi == 4  # two separate closed boxes
        assert len(tri) == 24
        assert volume == pytest.approx(2 - 2 * 0.01, rel=1e-5)  # each corner moved 0.01 pixel inward
        # the two copies of the shared corner are distinct points, 0.01 pixel from it along the diagonal
        d = np.linalg.norm(tri.reshape(-1, 3)[:, :2] - [1, 1], axis=1)
        assert d.min() == pytest.approx(0.01 * np.sqrt(2), rel=1e-4)


def smooth_structure(shape, seed):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return field > 0


def test_larger_structure_svg_and_stl(tmp_path):
    s = smooth_structure((150, 300), 7)
    loops = ex.boundary_loops(s)
    assert loops.signed_areas().sum() == s.sum()
    _, svg_loops, _, _ = parse_svg(ex.write_svg(s, tmp_path / "s.svg"))
    assert sum(shoelace(lp) for lp in svg_loops) == s.sum() and len(svg_loops) == len(loops.offsets) - 1
    chi, volume, _ = check_closed_manifold(ex.stl_triangles(s, thickness=1.0, pixel_size=1.0))
    assert chi == 2 * (ndimage.label(s)[1] - holes(s))
    assert 0 < volume <= s.sum() * (1 + 1e-9)


def test_stl_pinched_ring():
    chi, volume, _ = check_closed_manifold(ex.stl_triangles(PINCHED, thickness=1.0, pixel_size=1.0))
    assert chi == 2  # one part, no hole: the corner contact does not close the ring
    assert 7 - 0.1 < volume < 7


def test_stl_merges_rows(tmp_path):
    # a full rectangle: 2 triangles per row run on top and bottom, long walls in one quad
    tri = ex.stl_triangles(np.ones((10, 40), dtype=bool))
    chi, volume, _ = check_closed_manifold(tri)
    assert chi == 2 and volume == pytest.approx(400 / 2500 * 0.1)
    assert len(tri) == 2 * 2 * 10 + 2 * 2 + 2 * 2 * 10  # faces + top/bottom walls + side walls per pixel
    s = np.random.default_rng(4).random((60, 60)) < 0.7
    assert len(ex.stl_triangles(s)) < 4 * s.sum() + 2 * 4 * s.sum()  # fewer than one quad per pixel face


# --------------------------------------------------------------------------------------------------
# dispatch and errors


def test_export_all_formats(tmp_path):
    s = np.random.default_rng(6).random((50, 100)) < 0.6
    u = np.zeros((51, 101, 2))
    for suffix in ex.EXPORT_SUFFIXES:
        path = ex.export_structure(s, tmp_path / f"out{suffix.upper()}", displacement=u)
        assert path.exists() and path.stat().st_size > 0
    assert no_temp_files(tmp_path)


def test_errors(tmp_path):
    s = np.ones((50, 50), dtype=bool)
    with pytest.raises(InvalidValueError, match=r"path: expected a file name ending in one of \.npy, \.png, \.svg, \.vtu, \.stl, "
                                                r"got .*'\.obj'"):
        ex.export_structure(s, tmp_path / "s.obj")
    with pytest.raises(InvalidValueError, match="suffix 'none'"):
        ex.export_structure(s, tmp_path / "noext")
    with pytest.raises(InvalidTypeError, match="path: expected a file path"):
        ex.export_structure(s, 3)
    with pytest.raises(InvalidValueError, match=r"structure: expected a non-empty 2-D array .* got shape \(2, 50, 50\)"):
        ex.export_structure(np.ones((2, 50, 50)), tmp_path / "s.npy")
    with pytest.raises(InvalidValueError, match=r"structure: expected bool or 0/1 values .* got float64 values in \[0.0, 0.5\]"):
        ex.export_structure(np.full((50, 50), 0.5) * np.eye(50), tmp_path / "s.png")
    with pytest.raises(InvalidTypeError, match="structure: expected a 2-D bool array"):
        ex.export_structure("structure", tmp_path / "s.svg")
    with pytest.raises(InvalidValueError, match=r"displacement: expected shape \(51, 51, 2\)"):
        ex.export_structure(s, tmp_path / "s.vtu", displacement=np.zeros((51, 51)))
    with pytest.raises(InvalidValueError, match="thickness: expected a positive finite number, got -1.0"):
        ex.export_structure(s, tmp_path / "s.stl", thickness=-1)
    with pytest.raises(InvalidTypeError, match="thickness: expected a positive number"):
        ex.export_structure(s, tmp_path / "s.stl", thickness="thick")
    with pytest.raises(InvalidValueError, match="pixel_size: expected a positive finite number"):
        ex.export_structure(s, tmp_path / "s.svg", pixel_size=float("nan"))
    with pytest.raises(InvalidValueError, match="deformed: only supported for .png"):
        ex.export_structure(s, tmp_path / "s.svg", deformed=True)
    with pytest.raises(InvalidValueError, match="structure: expected at least one solid pixel"):
        ex.export_structure(np.zeros((50, 50), dtype=bool), tmp_path / "s.stl")
    with pytest.raises(InvalidTypeError, match="problem: expected a metasys.problems.Problem"):
        ex.export_structure(s, tmp_path / "s.png", deformed=True, displacement=np.zeros((51, 51, 2)), problem="bridge")
    with pytest.raises(InvalidValueError, match="path: expected a file name ending in '.stl'"):
        ex.write_stl(s, tmp_path / "s.svg")
    # a failed export leaves an existing file untouched and no temporary file behind
    ex.export_structure(s, tmp_path / "keep.vtu")
    before = (tmp_path / "keep.vtu").read_bytes()
    with pytest.raises(InvalidValueError):
        ex.export_structure(s, tmp_path / "keep.vtu", displacement=np.full((51, 51, 2), np.nan))
    assert (tmp_path / "keep.vtu").read_bytes() == before and no_temp_files(tmp_path)
