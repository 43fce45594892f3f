__version__ = "0.1.0"  # pyproject.toml's (tests/netlinkd/test_memory.py)
