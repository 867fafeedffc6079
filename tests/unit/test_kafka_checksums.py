"""kafka-python checksums every record batch it produces or fetches (CRC-32C); without the ``crc32c`` C module it
falls back to a pure-Python loop, ~900x slower (21 ms per 118 KB batch) — the bridge's producer would spend most
of its CPU there. The dependency is declared in pyproject.toml; this pins that kafka-python picks it up."""

from kafka.record import util


def test_kafka_python_uses_the_c_crc32c():
    assert util.crc32c_c is not None
    assert util.calc_crc32c is not None and util._crc32c is util.crc32c_c
    # the check value of CRC-32C ("123456789" -> 0xE3069283, RFC 3720 B.4)
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283
