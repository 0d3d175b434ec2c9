"""d3rlpy, imported quietly: a leaf module (the baselines and the dataset generator both use it)."""

from __future__ import annotations

import contextlib
import io
import logging


def import_d3rlpy():
    """Import d3rlpy without its import-time chatter (the legacy `gym` banner) and with its logs at WARNING."""
    import structlog

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        import d3rlpy
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy
