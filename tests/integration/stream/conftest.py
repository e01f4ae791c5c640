"""Fixtures of the stream tests: one real Kafka broker (KRaft, 127.0.0.1) and one churn bundle per
session; every test makes its own topics and consumer group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_broker import Broker, BrokerUnavailableError, kafka_broker
from stream_harness import build_churn_bundle


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    folder = tmp_path_factory.mktemp("kafka")
    try:
        broker_cm = kafka_broker(folder)
        broker = broker_cm.__enter__()
    except BrokerUnavailableError as exc:
        pytest.fail(f"no Kafka broker: {exc}")
    try:
        yield broker
    finally:
        broker_cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def churn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_churn_bundle(tmp_path_factory.mktemp("churn"))
