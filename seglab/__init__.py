"""seglab: config-driven semantic segmentation experiments on MMSegmentation 1.x.

Importing ``seglab`` is cheap (no torch); ``seglab.register`` registers the
framework extensions and is what configs name in ``custom_imports``.
"""

__version__ = "0.1.0"
