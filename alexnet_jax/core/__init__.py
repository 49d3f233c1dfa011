"""The spine: the network's tables and modules, the mesh and its rules, the
state, the optimiser of Sec. 5 and the jitted steps. JAX only: nothing here
imports TensorFlow or anything of `data`, `run` or `tools`."""
