"""MRF model files: UAI ``MARKOV`` (read) and OpenGM's HDF5 format (read and write).

UAI: ``MARKOV``, number of variables, their cardinalities, number of factors, one scope per
factor (``k v1 .. vk``), then per factor the number of entries and the potentials with the LAST
variable of the scope fastest. Costs are ``-ln(potential)`` (zero potentials: ``+inf``).

OpenGM (``opengm::hdf5::save``, format version 2.0), inside a group (default ``gm``):

- ``header`` uint64: ``[2, 0, n_variables, n_factors, n_function_types,
  (type_id, n_functions) per type, value_type]``; value_type 1 = double,
- ``numbers-of-states`` uint64 (n_variables,),
- ``function-id-16000/indices`` uint64: per explicit function ``[order, shape_0, .., shape_{order-1}]``,
  ``function-id-16000/values`` float64: the tables, FIRST variable fastest, concatenated,
- ``factors`` uint64: per factor ``[function_index, type_index, order, v_0, .., v_{order-1}]`` with
  ascending variable indices (``type_index`` indexes the header's type list).

OpenGM models with the adder operation are energies; metasys writes and reads them as such.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from ..errors import FileFormatError
from .model import MRFModel, as_model

EXPLICIT_FUNCTION_ID = 16000


def _assemble(n_states: np.ndarray, scopes: list, tables: list, constant: float = 0.0, source: str = "") -> MRFModel:
    """Model from factors: scopes (tuples of variables), tables (arrays of shape n_states[scope], C order)."""
    n = len(n_states)
    n_labels = int(n_states.max(initial=1))
    unary = np.full((n, n_labels), np.inf)
    for i, k in enumerate(n_states.tolist()):
        unary[i, :k] = 0.0
    pair_index = {}
    pair_tables = []
    for scope, table in zip(scopes, tables):
        if len(scope) == 0:
            constant += float(np.asarray(table).reshape(-1)[0])
        elif len(scope) == 1:
            unary[scope[0], : n_states[scope[0]]] += table
        elif len(scope) == 2:
            a, b = scope
            if a == b:
                raise FileFormatError(f"{source}: factor scope {scope} repeats a variable")
            if a > b:
                a, b, table = b, a, table.T
            if (a, b) not in pair_index:
                pair_index[(a, b)] = len(pair_tables)
                # labels a node does not have are forbidden by its unary (+inf); 0 here keeps sums finite
                pair_tables.append(np.zeros((n_labels, n_labels)))
            pair_tables[pair_index[(a, b)]][: n_states[a], : n_states[b]] += table
        else:
            raise FileFormatError(f"{source}: only factors of order <= 2 are supported, got a factor of order {len(scope)}")
    edges = np.array(list(pair_index), np.int64).reshape(-1, 2)
    pairwise = np.array(pair_tables).reshape(len(edges), n_labels, n_labels)
    return MRFModel(unary, edges, pairwise, constant=constant, n_labels=n_states.astype(np.int64), info={"source": source})


def read_uai(path) -> MRFModel:
    """Read a UAI ``MARKOV`` file (pairwise and unary factors) as an `MRFModel` of costs ``-ln phi``."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except OSError as exc:
        raise FileFormatError(f"read_uai: cannot read {str(path)!r} ({exc})") from None
    source = f"read_uai({str(path)!r})"
    try:
        if not tokens or tokens[0].upper() != "MARKOV":
            raise FileFormatError(f"{source}: expected a file starting with 'MARKOV', got {tokens[:1]}")
        pos = 1
        n = int(tokens[pos])
        pos += 1
        n_states = np.array(tokens[pos : pos + n], np.int64)
        pos += n
        n_factors = int(tokens[pos])
        pos += 1
        scopes = []
        for _ in range(n_factors):
            k = int(tokens[pos])
            scopes.append(tuple(int(t) for t in tokens[pos + 1 : pos + 1 + k]))
            pos += 1 + k
        tables = []
        for scope in scopes:
            count = int(tokens[pos])
            shape = tuple(int(n_states[v]) for v in scope)
            if count != int(np.prod(shape)):
                raise FileFormatError(f"{source}: factor over {scope} should list {int(np.prod(shape))} values, says {count}")
            phi = np.array(tokens[pos + 1 : pos + 1 + count], float).reshape(shape)  # last variable fastest = C order
            pos += 1 + count
            with np.errstate(divide="ignore"):
                tables.append(-np.log(phi))
    except (IndexError, ValueError) as exc:
        raise FileFormatError(f"{source}: truncated or malformed file ({exc})") from None
    if len(n_states) != n or any(v < 0 or v >= n for s in scopes for v in s):
        raise FileFormatError(f"{source}: scopes or cardinalities do not match {n} variables")
    return _assemble(n_states, scopes, tables, source=source)


def read_uai_assignment(path) -> np.ndarray:
    """Labels (n,) from a UAI MAP solution file (``MAP`` line, then ``n x_1 .. x_n``)."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except OSError as exc:
        raise FileFormatError(f"read_uai_assignment: cannot read {str(path)!r} ({exc})") from None
    if tokens and tokens[0].upper() == "MAP":
        tokens = tokens[1:]
    try:
        n = int(tokens[0])
        labels = np.array(tokens[1 : 1 + n], np.int64)
    except (IndexError, ValueError) as exc:
        raise FileFormatError(f"read_uai_assignment: malformed {str(path)!r} ({exc})") from None
    if len(labels) != n:
        raise FileFormatError(f"read_uai_assignment: {str(path)!r} announces {n} labels but lists {len(labels)}")
    return labels


def write_opengm(model, path, dataset: str = "gm") -> Path:
    """Write a model (or ``(unary, edges, pairwise)``) in OpenGM's HDF5 format with explicit functions.

    One unary factor per node, then one pairwise factor per edge (variables ascending); the file is
    written to a temporary name and renamed.
    """
    model = as_model(*model) if isinstance(model, tuple) else as_model(model)
    path = Path(path)
    n_states = model.n_labels.astype(np.uint64)
    e = model.edges
    flip = e[:, 0] > e[:, 1]
    e = np.where(flip[:, None], e[:, ::-1], e)
    tables = np.where(flip[:, None, None], np.swapaxes(model.pairwise, 1, 2), model.pairwise)
    indices, values, factors = [], [], []
    for i in range(model.n_nodes):
        k = int(n_states[i])
        indices += [1, k]
        values.append(model.unary[i, :k])
        factors += [i, 0, 1, i]
    for f, ((a, b), table) in enumerate(zip(e.tolist(), tables)):
        ka, kb = int(n_states[a]), int(n_states[b])
        indices += [2, ka, kb]
        values.append(table[:ka, :kb].ravel(order="F"))  # first variable fastest
        factors += [model.n_nodes + f, 0, 2, a, b]
    if model.constant != 0.0:
        indices += [0]
        values.append(np.array([model.constant]))
        factors += [model.n_nodes + len(e), 0, 0]
    n_functions = len(values)
    header = np.array([2, 0, model.n_nodes, n_functions, 1, EXPLICIT_FUNCTION_ID, n_functions, 1], np.uint64)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group(dataset)
            g.create_dataset("header", data=header)
            g.create_dataset("numbers-of-states", data=n_states)
            fg = g.create_group(f"function-id-{EXPLICIT_FUNCTION_ID}")
            fg.create_dataset("indices", data=np.array(indices, np.uint64))
            fg.create_dataset("values", data=np.concatenate(values).astype(np.float64))
            g.create_dataset("factors", data=np.array(factors, np.uint64))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_opengm(path, dataset: str = "gm") -> MRFModel:
    """Read an OpenGM HDF5 model (explicit functions, orders 0-2) as an `MRFModel` of costs."""
    path = Path(path)
    source = f"read_opengm({str(path)!r})"
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"{source}: not a readable HDF5 file ({exc})") from None
    with f:
        if dataset not in f or "header" not in f[dataset]:
            raise FileFormatError(f"{source}: no OpenGM model group {dataset!r} (with a 'header' dataset) in the file")
        g = f[dataset]
        header = g["header"][:].astype(np.int64)
        if len(header) < 5 or header[0] != 2 or header[1] != 0:
            raise FileFormatError(f"{source}: expected OpenGM HDF5 format version 2.0, got header {header[:2].tolist()}")
        n, n_factors, n_types = (int(v) for v in header[2:5])
        type_ids = [int(header[5 + 2 * t]) for t in range(n_types)]
        n_states = g["numbers-of-states"][:].astype(np.int64)
        functions = {}
        for t, type_id in enumerate(type_ids):
            if int(header[6 + 2 * t]) == 0:
                continue
            if type_id != EXPLICIT_FUNCTION_ID:
                raise FileFormatError(f"{source}: only explicit functions (id {EXPLICIT_FUNCTION_ID}) are supported, "
                                      f"the file uses function type {type_id}")
            idx = g[f"function-id-{type_id}/indices"][:].astype(np.int64)
            vals = g[f"function-id-{type_id}/values"][:].astype(float)
            tables, ip, vp = [], 0, 0
            while ip < len(idx):
                order = int(idx[ip])
                shape = tuple(int(s) for s in idx[ip + 1 : ip + 1 + order])
                size = int(np.prod(shape)) if order else 1
                tables.append(vals[vp : vp + size].reshape(shape, order="F") if order else vals[vp : vp + 1])
                ip += 1 + order
                vp += size
            functions[t] = tables
        fac = g["factors"][:].astype(np.int64) if n_factors else np.zeros(0, np.int64)
    scopes, tables, pos = [], [], 0
    for _ in range(n_factors):
        fi, ti, order = (int(v) for v in fac[pos : pos + 3])
        scope = tuple(int(v) for v in fac[pos + 3 : pos + 3 + order])
        pos += 3 + order
        if ti not in functions or fi >= len(functions[ti]):
            raise FileFormatError(f"{source}: factor refers to missing function {fi} of type index {ti}")
        table = functions[ti][fi]
        if order and table.shape != tuple(int(n_states[v]) for v in scope):
            raise FileFormatError(f"{source}: function shape {table.shape} does not match the states of variables {scope}")
        scopes.append(scope)
        tables.append(table)
    if len(n_states) != n:
        raise FileFormatError(f"{source}: header says {n} variables, numbers-of-states lists {len(n_states)}")
    return _assemble(n_states, scopes, tables, source=source)
