"""Generated protobuf messages shared by the controller and netlinkd (see proto/), and the
bytes a `WatchRequest` signs."""

WATCH_DOMAIN = b"netagent-watch-v1\0"


def watch_message(key_id: str, unix_time_ms: int) -> bytes:
    """Domain-separated: a batch's signature never verifies as a watch request's."""
    return WATCH_DOMAIN + key_id.encode() + unix_time_ms.to_bytes(8, "big")
