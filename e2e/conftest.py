"""The end-to-end tier: `lightjob run` as a user runs it, and through the real operator."""

from tests.conftest import S3, moto_endpoint, s3  # noqa: F401 - shared fixtures
