"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012) in JAX/Flax, split in two towers."""
