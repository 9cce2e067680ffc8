"""The CloudFormation gateway: the one call the CloudFormation guard needs, on the shared transport."""

from __future__ import annotations

from typing import Any

from ecs_cluster_manager.aws.transport import CredentialsError, EcsError, Gateway, RequestRejected, Transport


class CloudFormation(Gateway):
    """DescribeStacks, metered, retried and translated like every other call (no ECS budget applies)."""

    service = "cloudformation"

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self._client: Any = None

    def _cloudformation(self) -> Any:
        if self._client is None:
            try:
                self._client = self.transport.client("cloudformation")
            except CredentialsError as error:  # a malformed AWS_ENDPOINT_URL_CLOUDFORMATION: skip, do not crash
                raise EcsError(f"DescribeStacks: {error}") from None
        return self._client

    def stack_status(self, stack_name: str) -> str | None:
        """The status of a CloudFormation stack, or None when it does not exist."""
        cloudformation = self._cloudformation()
        try:
            page = self._call("DescribeStacks", cloudformation.describe_stacks, StackName=stack_name)
        except RequestRejected as error:
            if "does not exist" in str(error):
                return None
            raise
        stacks = page.get("Stacks", [])
        return str(stacks[0]["StackStatus"]) if stacks else None
