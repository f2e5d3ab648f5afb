"""A JAX function -> an ONNX graph, translated from its jaxpr (the `onnx` export format).

Why our own translator: jax2tf now serializes only natively (an XlaCallModule op
holding StableHLO), which tf2onnx cannot convert; jax2onnx 0.17 converts JAX
directly but pins orbax-checkpoint < 0.11.37, below the version this project
restores its checkpoints with. Our inference functions use a small set of
primitives (convolutions, pooling windows, dot products, BN's elementwise
arithmetic, softmax), each mapped here to the ONNX operator of the same
semantics; anything else is refused by name. Constants (weights, BN statistics
and whatever is computed from them alone) are folded by evaluating the
primitive with JAX itself, so the ONNX graph sees BN's folded scale and shift.

The batch dimension stays symbolic: the function is traced with a symbolic
batch size `b`, which becomes the ONNX dimension named "batch".
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import jax
import numpy as np

OPSET = 17
_ELEMENTWISE = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max",
                "min": "Min", "pow": "Pow", "exp": "Exp", "log": "Log", "tanh": "Tanh",
                "logistic": "Sigmoid", "neg": "Neg", "abs": "Abs", "sqrt": "Sqrt",
                "stop_gradient": "Identity", "copy": "Identity"}
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "remat", "checkpoint")


class UnsupportedError(ValueError):
  """The function uses something this translator has no ONNX mapping for."""


def _onnx_dtype(dtype) -> int:
  from onnx import helper
  return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _dims(shape) -> list:
  """ONNX reshape/expand dims: the (one) symbolic dimension becomes -1."""
  out = [d if isinstance(d, int) else -1 for d in shape]
  if out.count(-1) > 1:
    raise UnsupportedError(f"shape {shape} has more than one symbolic dimension")
  return out


def _sub_jaxpr(eqn):
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    if key in eqn.params:
      return eqn.params[key]
  raise UnsupportedError(f"no inner jaxpr in {eqn.primitive.name}")


class _Graph:
  """The ONNX nodes and initializers being built. A value is a numpy array (known
  without the input: folded) or a str (the name of an ONNX value)."""

  def __init__(self):
    self.nodes, self.initializers = [], []
    self._constants: Dict[int, str] = {}
    self._kept: list = []  # the folded arrays named so far (their ids stay unique)
    self._count = 0

  def fresh(self, hint: str = "v") -> str:
    self._count += 1
    return f"{hint}_{self._count}"

  def node(self, op: str, inputs: Sequence, hint: str = "", **attrs) -> str:
    from onnx import helper
    out = self.fresh(hint or op.lower())
    self.nodes.append(helper.make_node(op, [self.name(i) for i in inputs], [out], **attrs))
    return out

  def name(self, value) -> str:
    """The ONNX name of a value, making an initializer of a folded one (once)."""
    if isinstance(value, str):
      return value
    from onnx import numpy_helper
    key = id(value)
    if key not in self._constants:
      self._constants[key] = self.fresh("const")
      self.initializers.append(numpy_helper.from_array(np.asarray(value),
                                                       self._constants[key]))
      self._kept.append(value)
    return self._constants[key]


def _read(env, atom):
  if type(atom).__name__ == "Literal":
    return np.asarray(atom.val, dtype=atom.aval.dtype)
  return env[atom]


def _concrete(avals) -> bool:
  return all(isinstance(d, int) for a in avals for d in a.shape)


def _fold(eqn, values) -> list:
  """Evaluate an equation whose inputs are all known (weights, BN statistics)."""
  out = eqn.primitive.bind(*values, **eqn.params)
  return [np.asarray(o) for o in (out if eqn.primitive.multiple_results else [out])]


def emit_jaxpr(g: _Graph, jaxpr, consts: Sequence, args: Sequence) -> list:
  """Translate `jaxpr` (constvars bound to `consts`, invars to `args`); its outputs."""
  env = dict(zip(jaxpr.constvars, [np.asarray(c) for c in consts]))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    ins = [_read(env, a) for a in eqn.invars]
    name = eqn.primitive.name
    if name in _CALLS:
      inner = _sub_jaxpr(eqn)
      outs = emit_jaxpr(g, getattr(inner, "jaxpr", inner), getattr(inner, "consts", ()), ins)
    elif all(not isinstance(v, str) for v in ins) and _concrete(v.aval for v in eqn.outvars):
      outs = _fold(eqn, ins)
    elif name in _ELEMENTWISE:
      outs = [g.node(_ELEMENTWISE[name], ins)]
    elif name in _TRANSLATIONS:
      outs = [_TRANSLATIONS[name](g, eqn, ins)]
    else:
      raise UnsupportedError(f"the ONNX export has no translation for the JAX primitive "
                             f"{name!r}")
    env.update(zip(eqn.outvars, outs))
  return [_read(env, a) for a in jaxpr.outvars]


def _shape_const(dims) -> np.ndarray:
  return np.asarray(_dims(dims), np.int64)


def _cast(g, eqn, ins):
  return g.node("Cast", ins, to=_onnx_dtype(eqn.params["new_dtype"]))


def _rsqrt(g, eqn, ins):
  return g.node("Reciprocal", [g.node("Sqrt", ins)])


def _integer_pow(g, eqn, ins):
  exponent = np.asarray(eqn.params["y"], eqn.invars[0].aval.dtype)
  return g.node("Pow", [ins[0], exponent])


def _reshape(g, eqn, ins):
  return g.node("Reshape", [ins[0], _shape_const(eqn.params["new_sizes"])])


def _broadcast_in_dim(g, eqn, ins):
  """Insert the missing axes as 1s, then Expand (which broadcasts like numpy)."""
  shape, source = eqn.params["shape"], eqn.invars[0].aval.shape
  middle = [1] * len(shape)
  for i, d in enumerate(eqn.params["broadcast_dimensions"]):
    middle[d] = source[i]
  x = g.node("Reshape", [ins[0], _shape_const(middle)])
  if tuple(middle) == tuple(shape):
    return x
  if any(not isinstance(d, int) and isinstance(m, int) for d, m in zip(shape, middle)):
    raise UnsupportedError(f"broadcasting {source} to the symbolic shape {shape}")
  target = np.asarray([d if isinstance(d, int) else 1 for d in shape], np.int64)
  return g.node("Expand", [x, target])


def _dot_general(g, eqn, ins):
  """A matrix product x @ W (Dense layers): contract x's last axis, no batch axes."""
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
  if lb or rb or tuple(lc) != (lhs.ndim - 1,) or rhs.ndim != 2 or len(rc) != 1:
    raise UnsupportedError(f"dot_general with dimension numbers "
                           f"{eqn.params['dimension_numbers']}")
  w = ins[1]
  if rc[0] == 1:
    w = np.ascontiguousarray(w.T) if not isinstance(w, str) else g.node("Transpose", [w])
  return g.node("MatMul", [ins[0], w])


def _conv(g, eqn, ins):
  """lax.conv_general_dilated (any layout) as ONNX Conv on NCHW/OIHW, transposing."""
  p = eqn.params
  dn = p["dimension_numbers"]
  if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
    raise UnsupportedError("conv_general_dilated with input dilation or batch groups")
  x = g.node("Transpose", [ins[0]], perm=list(dn.lhs_spec))
  w = ins[1]
  w = (np.ascontiguousarray(np.transpose(w, dn.rhs_spec)) if not isinstance(w, str)
       else g.node("Transpose", [w], perm=list(dn.rhs_spec)))
  lo, hi = zip(*p["padding"])
  y = g.node("Conv", [x, w], strides=list(p["window_strides"]), pads=list(lo + hi),
             dilations=list(p["rhs_dilation"]), group=p["feature_group_count"])
  return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(dn.out_spec)])


def _pool(g, eqn, ins):
  """reduce_window max/sum over some axes as MaxPool/AveragePool over those axes."""
  p = eqn.params
  window, strides, pads = p["window_dimensions"], p["window_strides"], p["padding"]
  if any(d != 1 for d in tuple(p["base_dilation"]) + tuple(p["window_dilation"])):
    raise UnsupportedError("reduce_window with dilation")
  pooled = [i for i in range(len(window))
            if window[i] != 1 or strides[i] != 1 or tuple(pads[i]) != (0, 0)]
  others = [i for i in range(len(window)) if i not in pooled]
  if len(others) != 2:
    raise UnsupportedError(f"reduce_window over axes {pooled} of a rank-{len(window)} array")
  perm = others + pooled
  lo, hi = zip(*[pads[i] for i in pooled])
  attrs = dict(kernel_shape=[window[i] for i in pooled], strides=[strides[i] for i in pooled],
               pads=list(lo + hi))
  x = g.node("Transpose", [ins[0]], perm=perm)
  if eqn.primitive.name == "reduce_window_max":
    y = g.node("MaxPool", [x], **attrs)
  else:  # the sum: the mean over the window, padding counted as zeros, times its size
    y = g.node("AveragePool", [x], count_include_pad=1, **attrs)
    y = g.node("Mul", [y, np.asarray(np.prod(attrs["kernel_shape"]),
                                     eqn.outvars[0].aval.dtype)])
  return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(perm)])


def _pad(g, eqn, ins):
  config = eqn.params["padding_config"]
  if any(interior or lo < 0 or hi < 0 for lo, hi, interior in config):
    raise UnsupportedError("pad with interior or negative padding")
  pads = np.asarray([c[0] for c in config] + [c[1] for c in config], np.int64)
  return g.node("Pad", [ins[0], pads, ins[1]], mode="constant")


def _concatenate(g, eqn, ins):
  return g.node("Concat", ins, axis=eqn.params["dimension"])


def _reduce(op: str, axes_as_input: bool) -> Callable:
  def translate(g, eqn, ins):
    axes = [int(a) for a in eqn.params["axes"]]
    if axes_as_input:
      return g.node(op, [ins[0], np.asarray(axes, np.int64)], keepdims=0)
    return g.node(op, ins, axes=axes, keepdims=0)
  return translate


def _gather(g, eqn, ins):
  """x[..., i:i+n] with a constant i, which jnp writes as a gather when a dimension
  is symbolic; other gathers are refused."""
  dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
  rank = eqn.invars[0].aval.ndim
  start = ins[1]
  if (isinstance(start, str) or dn.collapsed_slice_dims or dn.operand_batching_dims
      or tuple(dn.offset_dims) != tuple(range(rank)) or len(dn.start_index_map) != 1
      or np.size(start) != 1):
    raise UnsupportedError(f"gather with dimension numbers {dn}")
  axis, begin = dn.start_index_map[0], int(np.reshape(start, -1)[0])
  return g.node("Slice", [ins[0], np.asarray([begin], np.int64),
                          np.asarray([begin + sizes[axis]], np.int64),
                          np.asarray([axis], np.int64)])


def _slice(g, eqn, ins):
  p = eqn.params
  axes = [i for i, (s, e) in enumerate(zip(p["start_indices"], p["limit_indices"]))
          if isinstance(e, int)]
  strides = p["strides"] or (1,) * len(p["start_indices"])
  return g.node("Slice", [ins[0]] + [np.asarray(v, np.int64) for v in (
      [p["start_indices"][i] for i in axes], [p["limit_indices"][i] for i in axes], axes,
      [strides[i] for i in axes])])


_TRANSLATIONS = {
    "convert_element_type": _cast, "rsqrt": _rsqrt, "integer_pow": _integer_pow,
    "square": lambda g, eqn, ins: g.node("Mul", [ins[0], ins[0]]),
    "reshape": _reshape, "broadcast_in_dim": _broadcast_in_dim, "dot_general": _dot_general,
    "conv_general_dilated": _conv, "reduce_window_max": _pool, "reduce_window_sum": _pool,
    "pad": _pad, "concatenate": _concatenate, "gather": _gather, "slice": _slice,
    "reduce_max": _reduce("ReduceMax", False), "reduce_min": _reduce("ReduceMin", False),
    "reduce_sum": _reduce("ReduceSum", True),
    "transpose": lambda g, eqn, ins: g.node("Transpose", ins,
                                            perm=list(eqn.params["permutation"])),
}


def _value_info(name: str, aval):
  from onnx import helper
  shape = [d if isinstance(d, int) else "batch" for d in aval.shape]
  return helper.make_tensor_value_info(name, _onnx_dtype(aval.dtype), shape)


def to_onnx(fn: Callable, input_shape: Sequence[int], input_dtype, input_name: str = "images"):
  """The ONNX model of `fn(x)` for x of shape (batch, *input_shape); `fn` returns a dict
  of arrays, which become the graph's outputs under their keys."""
  from onnx import checker, helper
  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch, *input_shape), input_dtype)
  closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(spec)
  keys = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(out_shapes)[0]]
  g = _Graph()
  outs = emit_jaxpr(g, closed.jaxpr, closed.consts, [input_name])
  for key, value in zip(keys, outs):
    g.nodes.append(helper.make_node("Identity", [g.name(value)], [key]))
  graph = helper.make_graph(
      g.nodes, "inference", [_value_info(input_name, spec)],
      [_value_info(k, v.aval) for k, v in zip(keys, closed.jaxpr.outvars)], g.initializers)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            producer_name="bn_inception", ir_version=9)
  checker.check_model(model)
  return model
