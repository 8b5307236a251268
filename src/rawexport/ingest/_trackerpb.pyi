# The C module behind rawexport.ingest.trackerpb (see there for the contract).
from typing import Any

Buffer = bytes | bytearray | memoryview

def decode_events(
    data: Buffer,
    limit: int | None,
    bad: type[ValueError],
    too_many: type[ValueError],
    values: int | None = None,
    message_values: int | None = None,
    /,
) -> list[dict[str, Any]]: ...
def decode_items(
    data: Buffer,
    limit: int | None,
    bad: type[ValueError],
    too_many: type[ValueError],
    values: int | None = None,
    message_values: int | None = None,
    /,
) -> list[dict[str, Any]]: ...
def decode_user_mappings(
    data: Buffer,
    limit: int | None,
    bad: type[ValueError],
    too_many: type[ValueError],
    values: int | None = None,
    message_values: int | None = None,
    /,
) -> list[dict[str, Any]]: ...
