"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012), split into two towers
on two devices as it was first trained.

The spine is core (the network, the mesh and its rules, the state and the
jitted steps) and run (a training run around them); data feeds them; tools
are the libraries of the commands around; the commands themselves are this
package's top-level modules (`python -m alexnet_jax.main`, ...).
"""
