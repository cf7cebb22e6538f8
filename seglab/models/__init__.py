"""Model components registered over mmseg's (``MODELS``)."""

from seglab.models.focal_loss import FocalLoss

__all__ = ["FocalLoss"]
