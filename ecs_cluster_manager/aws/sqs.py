"""The SQS gateway: long-polling and deleting the events queue's messages, on the shared transport.

Only the events thread calls it. Its calls are counted apart (by service) from
the loop's ECS calls, so a pass's `api_calls` never includes them, and no ECS
budget applies to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ecs_cluster_manager.aws.transport import Gateway, Transport, chunks
from ecs_cluster_manager.model.models import QueueMessage

SQS_MAX_WAIT_SECONDS = 20  # SQS's longest long poll (ReceiveMessage WaitTimeSeconds)
DELETE_MESSAGE_BATCH = 10  # SQS's limit per DeleteMessageBatch


class Sqs(Gateway):
    """ReceiveMessage (one attempt: the events source backs off on its own) and DeleteMessageBatch."""

    service = "sqs"

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self._client: Any = None

    def prepare(self) -> None:
        """Create the client now, so a malformed AWS_ENDPOINT_URL(_SQS) is a start-up error (CredentialsError)."""
        self._sqs_client()

    def _sqs_client(self) -> Any:
        if self._client is None:
            # The read timeout must outlast the longest long poll, or every quiet poll ends in a timeout.
            self._client = self.transport.client("sqs", read_timeout=SQS_MAX_WAIT_SECONDS + 10)
        return self._client

    def receive_messages(
        self,
        queue_url: str,
        wait_seconds: int = SQS_MAX_WAIT_SECONDS,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]:
        """Long-poll the queue: returns as soon as messages are there, or empty after `wait_seconds`.

        `visibility_timeout=0` leaves what it receives visible to the next receive.
        """
        sqs = self._sqs_client()
        page = self._once(
            "ReceiveMessage",
            sqs.receive_message,
            QueueUrl=queue_url,
            WaitTimeSeconds=wait_seconds,
            MaxNumberOfMessages=max_messages,
            **({} if visibility_timeout is None else {"VisibilityTimeout": visibility_timeout}),
        )
        return [
            QueueMessage(m.get("MessageId", "?"), m["ReceiptHandle"], m.get("Body", ""))
            for m in page.get("Messages", [])
            if "ReceiptHandle" in m
        ]

    def delete_messages(self, queue_url: str, messages: Sequence[QueueMessage]) -> dict[str, str]:
        """Delete messages, ten per call; returns the ones SQS did not delete (message id -> reason)."""
        sqs = self._sqs_client()
        failed: dict[str, str] = {}
        for batch in chunks(list(messages), DELETE_MESSAGE_BATCH):
            by_entry = {str(index): message for index, message in enumerate(batch)}
            page = self._call(
                "DeleteMessageBatch",
                sqs.delete_message_batch,
                QueueUrl=queue_url,
                Entries=[{"Id": key, "ReceiptHandle": m.receipt_handle} for key, m in by_entry.items()],
            )
            # HTTP 200 still reports failures entry by entry.
            for failure in page.get("Failed", []):
                message = by_entry.get(str(failure.get("Id")))
                failed[message.message_id if message else "?"] = str(failure.get("Message") or failure.get("Code"))
        return failed
