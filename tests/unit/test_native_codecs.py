"""Two C codecs the libraries pick up only when installed (both declared in pyproject.toml); without them the
worker and the bridge fall back to pure Python on their busiest paths (docs/performance.md, "A large fleet"):

- kafka-python checksums every record batch it produces or fetches (CRC-32C): the pure-Python loop is ~900x
  slower (21 ms per 118 KB batch) — the bridge's producer would spend most of its CPU there;
- Faust encodes the state table's changelog records with orjson when it can, else with the json module (2.4x
  slower per state)."""

import faust.utils.json as faust_json
from kafka.record import util


def test_kafka_python_uses_the_c_crc32c():
    assert util.crc32c_c is not None and util._crc32c is util.crc32c_c
    # the check value of CRC-32C ("123456789" -> 0xE3069283, RFC 3720 B.4)
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283


def test_faust_encodes_table_values_with_orjson():
    assert faust_json.orjson is not None
    state = {"v": 2, "fam": "crane", "lt": -(2**63), "m": [[1, 2], [0.5, None]]}
    assert faust_json.loads(faust_json.dumps(state)) == state
