"""The S3 fixtures (moto's server) for the event store suite."""

from tests.blobs.conftest import fake_aws_env, moto_s3

__all__ = ["fake_aws_env", "moto_s3"]
