"""The LightningJob resource: models, validation and the CRD. Imports no torch."""

from lightjob.api.models import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    LightningJob,
    LightningJobSpec,
    LightningJobStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "LightningJob",
    "LightningJobSpec",
    "LightningJobStatus",
]
