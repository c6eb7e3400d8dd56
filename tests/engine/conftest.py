"""Fixtures for the kernel-side engine tests: S3 protocol servers (see tests/s3.py)."""

from tests.s3 import moto_s3, rgw_s3, s3_server, s3_url  # noqa: F401
