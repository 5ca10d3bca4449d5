import os

# Tests run on the CPU with a fixed number of threads, and never grab all memory up front.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
