from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_NONE: _ClassVar[ErrorKind]
    BAD_SIGNATURE: _ClassVar[ErrorKind]
    REPLAY: _ClassVar[ErrorKind]
    STALE: _ClassVar[ErrorKind]
    MALFORMED: _ClassVar[ErrorKind]
    POLICY_REFUSED: _ClassVar[ErrorKind]
    NAMESPACE_GONE: _ClassVar[ErrorKind]
    CONFLICT: _ClassVar[ErrorKind]
    LINK_NOT_FOUND: _ClassVar[ErrorKind]
    KERNEL: _ClassVar[ErrorKind]
    AUDIT_UNAVAILABLE: _ClassVar[ErrorKind]
    OWNED_LINK_LIMIT: _ClassVar[ErrorKind]
ERROR_KIND_NONE: ErrorKind
BAD_SIGNATURE: ErrorKind
REPLAY: ErrorKind
STALE: ErrorKind
MALFORMED: ErrorKind
POLICY_REFUSED: ErrorKind
NAMESPACE_GONE: ErrorKind
CONFLICT: ErrorKind
LINK_NOT_FOUND: ErrorKind
KERNEL: ErrorKind
AUDIT_UNAVAILABLE: ErrorKind
OWNED_LINK_LIMIT: ErrorKind

class NamespaceRef(_message.Message):
    __slots__ = ("name", "pid", "path", "expect_inode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    EXPECT_INODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    pid: int
    path: str
    expect_inode: int
    def __init__(self, name: _Optional[str] = ..., pid: _Optional[int] = ..., path: _Optional[str] = ..., expect_inode: _Optional[int] = ...) -> None: ...

class LinkSpec(_message.Message):
    __slots__ = ("name", "netns", "mac", "mtu", "up", "addresses")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    netns: NamespaceRef
    mac: str
    mtu: int
    up: bool
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., up: _Optional[bool] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateVethPair(_message.Message):
    __slots__ = ("a", "b")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    a: LinkSpec
    b: LinkSpec
    def __init__(self, a: _Optional[_Union[LinkSpec, _Mapping]] = ..., b: _Optional[_Union[LinkSpec, _Mapping]] = ...) -> None: ...

class DeleteLink(_message.Message):
    __slots__ = ("name", "netns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    netns: NamespaceRef
    def __init__(self, name: _Optional[str] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ...) -> None: ...

class SetLink(_message.Message):
    __slots__ = ("name", "netns", "mac", "mtu", "up")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    name: str
    netns: NamespaceRef
    mac: str
    mtu: int
    up: bool
    def __init__(self, name: _Optional[str] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., up: _Optional[bool] = ...) -> None: ...

class AddAddress(_message.Message):
    __slots__ = ("name", "netns", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    netns: NamespaceRef
    address: str
    def __init__(self, name: _Optional[str] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., address: _Optional[str] = ...) -> None: ...

class DelAddress(_message.Message):
    __slots__ = ("name", "netns", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    netns: NamespaceRef
    address: str
    def __init__(self, name: _Optional[str] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., address: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("create_veth_pair", "delete_link", "set_link", "add_address", "del_address")
    CREATE_VETH_PAIR_FIELD_NUMBER: _ClassVar[int]
    DELETE_LINK_FIELD_NUMBER: _ClassVar[int]
    SET_LINK_FIELD_NUMBER: _ClassVar[int]
    ADD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    create_veth_pair: CreateVethPair
    delete_link: DeleteLink
    set_link: SetLink
    add_address: AddAddress
    del_address: DelAddress
    def __init__(self, create_veth_pair: _Optional[_Union[CreateVethPair, _Mapping]] = ..., delete_link: _Optional[_Union[DeleteLink, _Mapping]] = ..., set_link: _Optional[_Union[SetLink, _Mapping]] = ..., add_address: _Optional[_Union[AddAddress, _Mapping]] = ..., del_address: _Optional[_Union[DelAddress, _Mapping]] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("netns", "scan_named")
    NETNS_FIELD_NUMBER: _ClassVar[int]
    SCAN_NAMED_FIELD_NUMBER: _ClassVar[int]
    netns: _containers.RepeatedCompositeFieldContainer[NamespaceRef]
    scan_named: bool
    def __init__(self, netns: _Optional[_Iterable[_Union[NamespaceRef, _Mapping]]] = ..., scan_named: _Optional[bool] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("epoch", "sequence", "unix_time_ms", "owner", "operations", "observe")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_FIELD_NUMBER: _ClassVar[int]
    epoch: bytes
    sequence: int
    unix_time_ms: int
    owner: str
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    observe: ObserveRequest
    def __init__(self, epoch: _Optional[bytes] = ..., sequence: _Optional[int] = ..., unix_time_ms: _Optional[int] = ..., owner: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., observe: _Optional[_Union[ObserveRequest, _Mapping]] = ...) -> None: ...

class SignedBatch(_message.Message):
    __slots__ = ("batch", "signature", "key_id")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    batch: bytes
    signature: bytes
    key_id: str
    def __init__(self, batch: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ...) -> None: ...

class ObservedLink(_message.Message):
    __slots__ = ("name", "netns", "netns_inode", "ifindex", "mac", "mtu", "up", "addresses", "peer", "oper_state", "statistics")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    NETNS_INODE_FIELD_NUMBER: _ClassVar[int]
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    OPER_STATE_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    name: str
    netns: NamespaceRef
    netns_inode: int
    ifindex: int
    mac: str
    mtu: int
    up: bool
    addresses: _containers.RepeatedScalarFieldContainer[str]
    peer: str
    oper_state: str
    statistics: LinkStatistics
    def __init__(self, name: _Optional[str] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., netns_inode: _Optional[int] = ..., ifindex: _Optional[int] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., up: _Optional[bool] = ..., addresses: _Optional[_Iterable[str]] = ..., peer: _Optional[str] = ..., oper_state: _Optional[str] = ..., statistics: _Optional[_Union[LinkStatistics, _Mapping]] = ...) -> None: ...

class LinkStatistics(_message.Message):
    __slots__ = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RX_DROPPED_FIELD_NUMBER: _ClassVar[int]
    TX_DROPPED_FIELD_NUMBER: _ClassVar[int]
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    def __init__(self, rx_packets: _Optional[int] = ..., tx_packets: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., rx_errors: _Optional[int] = ..., tx_errors: _Optional[int] = ..., rx_dropped: _Optional[int] = ..., tx_dropped: _Optional[int] = ...) -> None: ...

class BatchReply(_message.Message):
    __slots__ = ("ok", "failed_index", "error_kind", "error", "observed", "helper_instance", "own_changes", "generation")
    OK_FIELD_NUMBER: _ClassVar[int]
    FAILED_INDEX_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    HELPER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    OWN_CHANGES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    failed_index: int
    error_kind: ErrorKind
    error: str
    observed: _containers.RepeatedCompositeFieldContainer[ObservedLink]
    helper_instance: bytes
    own_changes: _containers.RepeatedCompositeFieldContainer[OwnChanges]
    generation: int
    def __init__(self, ok: _Optional[bool] = ..., failed_index: _Optional[int] = ..., error_kind: _Optional[_Union[ErrorKind, str]] = ..., error: _Optional[str] = ..., observed: _Optional[_Iterable[_Union[ObservedLink, _Mapping]]] = ..., helper_instance: _Optional[bytes] = ..., own_changes: _Optional[_Iterable[_Union[OwnChanges, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class OwnChanges(_message.Message):
    __slots__ = ("netns", "after", "through")
    NETNS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    THROUGH_FIELD_NUMBER: _ClassVar[int]
    netns: NamespaceRef
    after: int
    through: int
    def __init__(self, netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., after: _Optional[int] = ..., through: _Optional[int] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("helper_instance", "version")
    HELPER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    helper_instance: bytes
    version: str
    def __init__(self, helper_instance: _Optional[bytes] = ..., version: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("key_id", "unix_time_ms", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    unix_time_ms: int
    signature: bytes
    def __init__(self, key_id: _Optional[str] = ..., unix_time_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class LinkChange(_message.Message):
    __slots__ = ("owner", "name", "ifindex", "netns", "deleted", "mac", "mtu", "up", "oper_state", "peer", "added_addresses", "removed_addresses")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    OPER_STATE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ADDED_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    owner: str
    name: str
    ifindex: int
    netns: NamespaceRef
    deleted: bool
    mac: str
    mtu: int
    up: bool
    oper_state: str
    peer: str
    added_addresses: _containers.RepeatedScalarFieldContainer[str]
    removed_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, owner: _Optional[str] = ..., name: _Optional[str] = ..., ifindex: _Optional[int] = ..., netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., deleted: _Optional[bool] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., up: _Optional[bool] = ..., oper_state: _Optional[str] = ..., peer: _Optional[str] = ..., added_addresses: _Optional[_Iterable[str]] = ..., removed_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class LinkEvent(_message.Message):
    __slots__ = ("helper_instance", "changes", "overrun", "namespace_gone", "generation", "quiet")
    HELPER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    OVERRUN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_GONE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    helper_instance: bytes
    changes: _containers.RepeatedCompositeFieldContainer[LinkChange]
    overrun: bool
    namespace_gone: _containers.RepeatedCompositeFieldContainer[NamespaceRef]
    generation: int
    quiet: _containers.RepeatedCompositeFieldContainer[QuietNamespace]
    def __init__(self, helper_instance: _Optional[bytes] = ..., changes: _Optional[_Iterable[_Union[LinkChange, _Mapping]]] = ..., overrun: _Optional[bool] = ..., namespace_gone: _Optional[_Iterable[_Union[NamespaceRef, _Mapping]]] = ..., generation: _Optional[int] = ..., quiet: _Optional[_Iterable[_Union[QuietNamespace, _Mapping]]] = ...) -> None: ...

class QuietNamespace(_message.Message):
    __slots__ = ("netns", "watched_since", "last_message")
    NETNS_FIELD_NUMBER: _ClassVar[int]
    WATCHED_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    netns: NamespaceRef
    watched_since: int
    last_message: int
    def __init__(self, netns: _Optional[_Union[NamespaceRef, _Mapping]] = ..., watched_since: _Optional[int] = ..., last_message: _Optional[int] = ...) -> None: ...
