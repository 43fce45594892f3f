__version__ = "0.1.0"  # pyproject.toml's (tests/controller/test_startup_imports.py)
