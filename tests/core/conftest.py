"""core/ tests use tiny tensors: run them single-threaded (tests/support/threads.py)."""
from threads import one_thread  # noqa: F401  (autouse fixture)
