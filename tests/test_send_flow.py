"""Notifications end to end: a sequence on the simulator notifies a real HTTP receiver
on 127.0.0.1; a receiver that is down never fails the run, and gets every
notification exactly once when it is back."""

from __future__ import annotations

import asyncio

import pytest

from flows.exposure import run_sequence
from schemas.exposure import SequenceSpec
from schemas.instrument import InstrumentConfig
from tasks.send import drain

from .receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SEQUENCE = SequenceSpec(name="notify", exposures=[{"image_type": "bias", "count": 3}])


def _with_receiver(
    instrument: InstrumentConfig, receiver: Receiver, **extra: object
) -> InstrumentConfig:
    data = instrument.model_dump()
    data["receivers"] = [
        {"name": "archive", "url": receiver.url, "timeout_s": 2, "backoff_s": 0.1, **extra}
    ]
    return InstrumentConfig.model_validate(data)


async def test_every_exposure_is_announced_once(sim_instrument: InstrumentConfig) -> None:
    with Receiver() as receiver:
        instrument = _with_receiver(sim_instrument, receiver)
        result = await run_sequence(SEQUENCE, instrument)
        announced = sorted(r.metadata["exposure"]["expnum"] for r in receiver.accepted())
    assert announced == [e.expnum for e in result.exposures]
    first = receiver.accepted()[0].metadata
    assert first["sequence"] == "notify"
    assert first["flow_run_id"] == result.flow_run_id
    assert [f["sha256"] for f in first["exposure"]["files"]] == [
        f.sha256 for f in result.exposures[0].files
    ]


async def test_a_receiver_down_during_the_run_gets_everything_once_when_back(
    sim_instrument: InstrumentConfig,
) -> None:
    receiver = Receiver()
    receiver.start()
    receiver.stop()  # down, on a port we know
    instrument = _with_receiver(sim_instrument, receiver)
    result = await run_sequence(SEQUENCE, instrument)  # completes despite the receiver
    assert len(result.exposures) == 3
    receiver.start()
    try:
        outbox = instrument.storage.data_root / "outbox"
        for _ in range(50):  # backoff is 0.1 s doubling; a few drains deliver all
            report = await drain(outbox, instrument.receivers)
            if not report.waiting and len(receiver.accepted()) >= 3:
                break
            await asyncio.sleep(0.2)
        keys = [r.idempotency_key for r in receiver.accepted()]
        numbers = sorted(r.metadata["exposure"]["expnum"] for r in receiver.accepted())
    finally:
        receiver.stop()
    assert numbers == [e.expnum for e in result.exposures]  # each exactly once
    assert len(set(keys)) == len(keys) == 3
