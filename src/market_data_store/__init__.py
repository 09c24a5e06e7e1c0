"""market-data-store: the storage service of the market-data platform.

market-data-core still declares its pydantic models with v1-style ``class Config``
and imports a deprecated module of its own; the resulting DeprecationWarnings
come from *its* modules, so they are silenced by module, which leaves
deprecation warnings raised by our code (or raised by libraries about our
calls) visible.
"""

import warnings
from importlib.metadata import version

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"market_data_core(\.|$)")

__version__ = version("market-data-store")

__all__ = ["__version__"]
