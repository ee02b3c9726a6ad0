"""The one logical-axis rules table, and the shardings derived from it.

Model code names logical axes only (parameters: embed, heads, kv_heads, head_dim, mlp, vocab,
layers; activations: batch, sequence, embed, heads, kv_heads, mlp, vocab). This module maps them
to the mesh axes `data`, `fsdp`, `sequence`, `tensor`.

Each logical name appears once, so the table means the same under Flax's two resolvers: NNX's
per-parameter lookup (a dict) and linen's `with_logical_constraint` (a priority list that skips a
mesh axis already used in the same array). The second is what keeps activations right: in
[batch, sequence, embed] `batch` takes (data, fsdp) and `sequence` takes sequence, so `embed`
finds its FSDP axes taken and stays replicated, while in a weight [embed, mlp] it is FSDP-sharded.
"""

import contextlib
from collections.abc import Iterator, Mapping

import jax
import numpy as np
from flax import linen as nn
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from longjax.train.mesh import batch_axes

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def logical_axis_rules(params_on_sequence: bool = True) -> LogicalRules:
  """The rules table. Order matters for activations: batch and sequence claim their axes first."""
  return (
      ("batch", batch_axes()),
      ("sequence", "sequence"),
      ("embed", ("fsdp", "sequence") if params_on_sequence else "fsdp"),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("mlp", "tensor"),
      ("vocab", "tensor"),
      ("head_dim", None),
      ("layers", None),
  )


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules: LogicalRules) -> Iterator[None]:
  """Sets the mesh (read by `ops.attention` for the ring) and the logical rules for tracing."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield


def logical_names(variable: nnx.Variable) -> tuple | None:
  """The logical axis names a parameter was annotated with, or None."""
  meta = variable.get_metadata()
  for key in ("out_sharding", "sharding_names", "sharding"):
    names = meta.get(key)
    if names:
      return tuple(names)
  return None


def spec_for(names: tuple | None, shape: tuple[int, ...], mesh: jax.sharding.Mesh,
             rules: LogicalRules) -> P:
  """Mesh spec for logical `names`; a dimension the mesh axes do not divide stays replicated."""
  if names is None:
    return P()
  if len(names) != len(shape):
    raise ValueError(f"logical axes {names} do not match the array shape {shape}")
  spec = list(nn.logical_to_mesh_axes(names, rules))
  for i, axes in enumerate(spec):
    if axes is None:
      continue
    size = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))
    if shape[i] % size:
      spec[i] = None  # e.g. 3 kv heads on tensor=2: replicate rather than fail to compile.
  return P(*spec)


def to_pure(state: nnx.State, tree) -> dict:
  """Re-nests `tree` (one leaf per Variable of `state`) as `state.to_pure_dict()` is nested."""
  def is_var(x):
    return isinstance(x, nnx.Variable)
  leaves = [x.get_value() if is_var(x) else x for x in jax.tree.leaves(tree, is_leaf=is_var)]
  return jax.tree.unflatten(jax.tree.structure(state.to_pure_dict()), leaves)


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh, rules: LogicalRules) -> dict:
  """Pure-dict tree of NamedShardings for an (abstract) `nnx.State`, from its logical metadata."""
  def one(v):
    return NamedSharding(mesh, spec_for(logical_names(v), tuple(v.shape), mesh, rules))
  return to_pure(state, jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def batch_spec() -> P:
  """Spec of every [B, S] input array: batch over (data, fsdp), sequence over `sequence`."""
  return P(batch_axes(), "sequence")


def check_batch_shape(batch_size: int, seq_len: int, mesh: jax.sharding.Mesh,
                      zigzag: bool) -> None:
  """Raises a clear error (before anything compiles) if the batch does not fit the mesh."""
  nb = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % nb:
    raise ValueError(f"global batch size ({batch_size}) must be divisible by data*fsdp "
                     f"({mesh.shape['data']}*{mesh.shape['fsdp']} = {nb})")
  ns = mesh.shape["sequence"] * (2 if zigzag and mesh.shape["sequence"] > 1 else 1)
  if seq_len % ns:
    what = "2*sequence (zigzag)" if ns != mesh.shape["sequence"] else "the sequence axis"
    raise ValueError(f"sequence length ({seq_len}) must be divisible by {what} ({ns})")


def host_slices(mesh: jax.sharding.Mesh, global_shape: tuple[int, int]) -> tuple[slice, slice]:
  """The (batch rows, sequence columns) block of a [B, S] input that this process must load.

  With several hosts, each loads only what its devices hold; the block is a rectangle for every
  mesh `make_mesh` builds (checked here rather than assumed).
  """
  sharding = NamedSharding(mesh, batch_spec())
  idx = sharding.addressable_devices_indices_map(global_shape).values()
  rows = {(s[0].start or 0, s[0].stop or global_shape[0]) for s in idx}
  cols = {(s[1].start or 0, s[1].stop or global_shape[1]) for s in idx}
  r0, r1 = min(r[0] for r in rows), max(r[1] for r in rows)
  c0, c1 = min(c[0] for c in cols), max(c[1] for c in cols)
  covered = sum((r[1] - r[0]) for r in rows) * sum((c[1] - c[0]) for c in cols)
  if covered != (r1 - r0) * (c1 - c0):
    raise ValueError(f"process {jax.process_index()}'s devices hold a non-rectangular part of the "
                     f"batch ({sorted(rows)} x {sorted(cols)}); reorder the mesh devices")
  return slice(r0, r1), slice(c0, c1)


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                 global_shape: tuple[int, int]) -> dict[str, jax.Array]:
  """Assembles global [B, S] arrays from this process's block (`host_slices`) of each feature."""
  sharding = NamedSharding(mesh, batch_spec())
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v), global_shape)
          for k, v in local.items()}


def mirror_shardings(tree, params, param_shardings, mesh: jax.sharding.Mesh):
  """Shardings for a tree (optimizer state) whose array leaves mirror the parameters.

  A leaf whose key path ends with a parameter's key path, and has its shape, gets that
  parameter's sharding (Adam's mu and nu); everything else (step counts) is replicated.
  """
  known = {}
  for (path, p), s in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          jax.tree.leaves(param_shardings)):
    known[jax.tree_util.keystr(path)] = (tuple(p.shape), s)

  def one(path, leaf):
    for i in range(len(path)):
      hit = known.get(jax.tree_util.keystr(tuple(path[i:])))
      if hit and hit[0] == tuple(leaf.shape):
        return hit[1]
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(one, tree)
