"""PosSAM's library loggers.

They are children of transformers' library logger (`transformers.possam.<module>`), so transformers' verbosity controls
apply to PosSAM too: `transformers.logging.set_verbosity_info()`, `TRANSFORMERS_VERBOSITY=info`, and the Trainer's
`--log_level` / `--log_level_replica` in `possam train`. Library code logs; only command-line entry points print.
"""

from transformers.utils import logging


def get_logger(name: str) -> logging.logging.Logger:
    """The logger of module `name` (pass `__name__`)."""
    return logging.get_logger(f"transformers.{name}")
