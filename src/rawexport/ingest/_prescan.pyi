# The C module behind rawexport.ingest.jsonscan and codecs.unlz4 (see there for the contract).
def scan_json(
    data: bytes | bytearray | memoryview,
    max_events: int | None,
    max_values: int | None,
    max_event_values: int | None,
    max_depth: int | None,
    /,
) -> tuple[int, int, int, int, int]: ...
def lz4_size(block: bytes | bytearray | memoryview, stop: int, /) -> int: ...
