//! Lease locks with fencing tokens: the deterministic lock state machine and the Lock gRPC service (a later issue).
