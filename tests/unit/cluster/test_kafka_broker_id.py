"""The test Kafka broker's KRaft cluster id never starts with "-": kafka-storage's argument parser
takes such an id for an option, and the broker of a whole CI run failed to format (2026-12-03)."""

from __future__ import annotations

import base64
import uuid

import pytest

import kafka_broker


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dash_first = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # first 6 bits 62: "-" in urlsafe base64
    assert base64.urlsafe_b64encode(dash_first.bytes).decode().startswith("-")
    drawn = iter([dash_first, dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert kafka_broker.cluster_id() == base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).decode().rstrip("=")


def test_ids_are_22_urlsafe_characters_never_led_by_a_dash() -> None:
    ids = [kafka_broker.cluster_id() for _ in range(2000)]  # about 31 would start with "-" unchecked
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
