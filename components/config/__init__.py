from components.config.legacy import *  # noqa: F403 (temporary during the move)
from components.config.legacy import _warn_unverified_driver  # noqa: F401
