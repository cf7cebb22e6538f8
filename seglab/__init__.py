"""seglab: config-driven semantic segmentation experiments on MMSegmentation 1.x.

Importing ``seglab`` is cheap (no torch); ``seglab.register`` registers the
framework extensions and is what configs name in ``custom_imports``.
"""

from pathlib import Path

__version__ = "0.1.0"
# The checkout seglab runs from (installed editable): configs/, tools/, scripts/ live here.
REPO_ROOT = Path(__file__).resolve().parent.parent
