//! In-memory reference implementations of the five gRPC services, faithful to the
//! contract's backend behaviour. They serve `sms-gateway demo`, the end-to-end tests and
//! the benchmarks; the gateway itself never depends on them (it only sees addresses).
