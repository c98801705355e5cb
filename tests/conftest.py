import os

# The engine core's tests need no Django at all (`pytest tests/engine -p no:django` runs them
# without it); everything else gets the fixtures in tests/fixtures.py.
pytest_plugins = ["tests.fixtures"] if os.environ.get("DJANGO_SETTINGS_MODULE") else []
