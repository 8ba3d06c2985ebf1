"""The typed answers of the v1 API, shared with the API itself: see models/schemas.py."""

from models.schemas import (
    ErrorEnvelope,
    ErrorInfo,
    Image,
    Job,
    JobResult,
    MeasuredOn,
    Measurement,
    Model,
    Page,
    Progress,
    Sweep,
    SweepGrid,
    VideoMetrics,
)
from models.status import TERMINAL

__all__ = ["TERMINAL", "ErrorEnvelope", "ErrorInfo", "Image", "Job", "JobResult", "MeasuredOn", "Measurement", "Model",
           "Page", "Progress", "Sweep", "SweepGrid", "VideoMetrics"]
