"""Error texts name the class once: aiokafka's messages start with their class name already."""

from __future__ import annotations

from aiokafka.errors import KafkaTimeoutError, UnsupportedCodecError

from distcount_core import describe


def test_a_class_name_already_in_the_message_is_not_repeated() -> None:
    assert describe(KafkaTimeoutError()) == "KafkaTimeoutError"
    text = describe(UnsupportedCodecError("Libraries for lz4 compression codec not found"))
    assert text == "UnsupportedCodecError: Libraries for lz4 compression codec not found"
    assert text.count("UnsupportedCodecError") == 1


def test_others_get_their_class_name_in_front() -> None:
    assert describe(ConnectionRefusedError("refused")) == "ConnectionRefusedError: refused"
    assert describe(TimeoutError()) == "TimeoutError: no answer in time"
    assert describe(ValueError()) == "ValueError"
