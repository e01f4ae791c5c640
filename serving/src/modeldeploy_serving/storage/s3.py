"""s3:// bundles through boto3; the endpoint is configurable for S3-compatible stores (MinIO, moto).

Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID/..., a web identity token, instance
metadata), so a pod uses whatever its service account or Secret provides: IRSA (AWS_ROLE_ARN +
AWS_WEB_IDENTITY_TOKEN_FILE) and EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI) need no static
key (tests/integration/serving/test_storage_s3_identity.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modeldeploy_contract.redact import redact_uri, scrub
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import write_capped


class S3Source:
    def __init__(self, uri: str, endpoint_url: str | None, timeout: float) -> None:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise BundleError(f"s3 URI without a bucket: {redact_uri(uri)}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=self.timeout, read_timeout=self.timeout, retries={"max_attempts": 3}
            )
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def fetch(self, name: str, dest: Path, limit: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{name}" if self.prefix else name
        where = f"s3://{self.bucket}/{key}"
        try:
            obj = self._s3().get_object(Bucket=self.bucket, Key=key)
            if int(obj.get("ContentLength", 0)) > limit:
                raise BundleError(f"{where} is {obj['ContentLength']} bytes, more than the {limit} allowed")
            write_capped(obj["Body"].iter_chunks(1 << 20), dest, limit, where)
        except (BotoCoreError, ClientError) as exc:
            # botocore's message names the operation and the error code, never the credentials; scrub anyway.
            raise BundleError(f"reading {where} failed: {scrub(str(exc))[:300]}") from exc
