"""The train state, created already sharded as the strategy's rules say.

The state is step, params, opt_state and rng; no device ever holds more of
it than its part (big_vision's habit: `jax.eval_shape`, then
`jax.jit(init, out_shardings=...)`).
"""

from typing import Any

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core.network import ModelConfig


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied = batches consumed.
  params: Any  # nnx.State of the network; towers on every leaf's leading axis.
  opt_state: Any  # optim.optimizer's state: Sec. 5's v, the plateau scale, counts.
  rng: jax.Array  # uint32 key data (checkpointable); folded with the step.


def _optimizer(opt: optim.OptimizerConfig) -> optax.GradientTransformation:
  # The schedule does not change the state's structure: placeholder counts.
  return optim.optimizer(opt, optim.learning_rate_fn(opt, 1, 1))


def initial_state(cfg: ModelConfig, opt: optim.OptimizerConfig, seed: int) -> TrainState:
  """The state before step 1 (traced by `abstract_state` and `create_train_state`)."""
  params = nnx.state(model.create(cfg, seed), nnx.Param)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=_optimizer(opt).init(params),
      rng=jax.random.key_data(model.prng_key(seed + 1)),
  )


def abstract_state(cfg: ModelConfig, opt: optim.OptimizerConfig) -> TrainState:
  """Shapes and dtypes of the state, without computing anything."""
  return jax.eval_shape(lambda: initial_state(cfg, opt, 0))


def state_shardings(state: TrainState, opt: optim.OptimizerConfig,
                    rules: parallel.Rules, mesh) -> TrainState:
  """Parameters as the rules say, the optimiser's copies alike."""
  params = parallel.param_shardings(model.param_axes(state.params), rules, mesh)
  replicated = parallel.replicated(mesh)
  return TrainState(
      step=replicated, params=params,
      opt_state=optax.tree_map_params(
          _optimizer(opt), lambda _, s: s, state.opt_state, params,
          transform_non_params=lambda _: replicated),
      rng=replicated)


def sharded_abstract_state(cfg: ModelConfig, opt: optim.OptimizerConfig,
                           rules: parallel.Rules, mesh) -> TrainState:
  """The abstract state with its shardings: what a restore or a compile needs."""
  abstract = abstract_state(cfg, opt)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, state_shardings(abstract, opt, rules, mesh))


def create_train_state(cfg: ModelConfig, opt: optim.OptimizerConfig, seed: int,
                       rules: parallel.Rules, mesh) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the state already sharded: no device ever holds more than its part."""
  shardings = state_shardings(abstract_state(cfg, opt), opt, rules, mesh)
  init = jax.jit(lambda: initial_state(cfg, opt, seed), out_shardings=shardings)
  with jax.set_mesh(mesh):
    return model.graphdef(cfg), init()
