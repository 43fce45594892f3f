"""Generated protobuf messages shared by the controller and netlinkd (see proto/)."""
