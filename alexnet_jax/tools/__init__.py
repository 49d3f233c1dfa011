"""The libraries of the commands around the spine: evaluation, prediction,
the placement report and its collectives, benchmarks, pictures, sweeps."""
