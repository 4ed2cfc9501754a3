"""Fixtures shared across test modules (defined in data_fixtures.py and bundle_fixtures.py, registered here once so
that session-scoped ones, such as the trained bundle, are built once per run)."""

from bundle_fixtures import phantom_dir, trained_bundle  # noqa: F401
from data_fixtures import acdc_h5_dir, one_thread, synthetic_dir, totalseg_dir  # noqa: F401
