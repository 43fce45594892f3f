from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Interface(_message.Message):
    __slots__ = ("name", "description", "type", "enabled", "phys_address", "mtu", "ip_addresses", "namespace", "host_if_name", "veth")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VETH: _ClassVar[Interface.Type]
    VETH: Interface.Type
    class Namespace(_message.Message):
        __slots__ = ("type", "pid", "microservice", "name", "filepath")
        class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            PID_REF_NS: _ClassVar[Interface.Namespace.Type]
            MICROSERVICE_REF_NS: _ClassVar[Interface.Namespace.Type]
            NAMED_NS: _ClassVar[Interface.Namespace.Type]
            FILE_REF_NS: _ClassVar[Interface.Namespace.Type]
        PID_REF_NS: Interface.Namespace.Type
        MICROSERVICE_REF_NS: Interface.Namespace.Type
        NAMED_NS: Interface.Namespace.Type
        FILE_REF_NS: Interface.Namespace.Type
        TYPE_FIELD_NUMBER: _ClassVar[int]
        PID_FIELD_NUMBER: _ClassVar[int]
        MICROSERVICE_FIELD_NUMBER: _ClassVar[int]
        NAME_FIELD_NUMBER: _ClassVar[int]
        FILEPATH_FIELD_NUMBER: _ClassVar[int]
        type: Interface.Namespace.Type
        pid: int
        microservice: str
        name: str
        filepath: str
        def __init__(self, type: _Optional[_Union[Interface.Namespace.Type, str]] = ..., pid: _Optional[int] = ..., microservice: _Optional[str] = ..., name: _Optional[str] = ..., filepath: _Optional[str] = ...) -> None: ...
    class Veth(_message.Message):
        __slots__ = ("peer_if_name",)
        PEER_IF_NAME_FIELD_NUMBER: _ClassVar[int]
        peer_if_name: str
        def __init__(self, peer_if_name: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PHYS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HOST_IF_NAME_FIELD_NUMBER: _ClassVar[int]
    VETH_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    type: Interface.Type
    enabled: bool
    phys_address: str
    mtu: int
    ip_addresses: _containers.RepeatedScalarFieldContainer[str]
    namespace: Interface.Namespace
    host_if_name: str
    veth: Interface.Veth
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[_Union[Interface.Type, str]] = ..., enabled: _Optional[bool] = ..., phys_address: _Optional[str] = ..., mtu: _Optional[int] = ..., ip_addresses: _Optional[_Iterable[str]] = ..., namespace: _Optional[_Union[Interface.Namespace, _Mapping]] = ..., host_if_name: _Optional[str] = ..., veth: _Optional[_Union[Interface.Veth, _Mapping]] = ...) -> None: ...

class InterfaceStatus(_message.Message):
    __slots__ = ("state", "reason", "warnings", "kernel_name", "namespace", "ifindex", "oper_state", "statistics")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PENDING: _ClassVar[InterfaceStatus.State]
        CONFIGURED: _ClassVar[InterfaceStatus.State]
        ERROR: _ClassVar[InterfaceStatus.State]
    PENDING: InterfaceStatus.State
    CONFIGURED: InterfaceStatus.State
    ERROR: InterfaceStatus.State
    class KernelNamespace(_message.Message):
        __slots__ = ("name", "pid", "path")
        NAME_FIELD_NUMBER: _ClassVar[int]
        PID_FIELD_NUMBER: _ClassVar[int]
        PATH_FIELD_NUMBER: _ClassVar[int]
        name: str
        pid: int
        path: str
        def __init__(self, name: _Optional[str] = ..., pid: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...
    class Statistics(_message.Message):
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
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    OPER_STATE_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    state: InterfaceStatus.State
    reason: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    kernel_name: str
    namespace: InterfaceStatus.KernelNamespace
    ifindex: int
    oper_state: str
    statistics: InterfaceStatus.Statistics
    def __init__(self, state: _Optional[_Union[InterfaceStatus.State, str]] = ..., reason: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., kernel_name: _Optional[str] = ..., namespace: _Optional[_Union[InterfaceStatus.KernelNamespace, _Mapping]] = ..., ifindex: _Optional[int] = ..., oper_state: _Optional[str] = ..., statistics: _Optional[_Union[InterfaceStatus.Statistics, _Mapping]] = ...) -> None: ...
