"""Fixtures shared by every test layer live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.controlplane",
    "tests.fixtures.realnode",
    "tests.fixtures.weaviate_server",
]
