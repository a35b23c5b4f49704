//! Protobuf definitions and generated gRPC code (the service code with the default
//! feature `grpc`; without it, the messages only, and no tonic).
//!
//! The three seed services are wire-compatible with their upstream projects, field for
//! field; `datanexus.v1` holds the record formats written to broker topics.
//!
//! # Layout
//! - `proto/data_nexus/metrics.proto`: `data_nexus.MetricsService` (Data Nexus seed).
//! - `proto/nimbus/nimbus.proto`: `nimbus.NimbusService` (NimbusGRPC seed).
//! - `proto/raftmetrics/v1/metrics.proto`: `raftmetrics.v1.MetricsService` (RaftMetrics seed).
//! - `proto/datanexus/v1/records.proto`: the documented topic record formats.
//! - `proto/prometheus/remote.proto`: Prometheus remote write 1.0 messages.
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of all of them, for gRPC
//! server reflection.

#![allow(unreachable_pub, clippy::all, clippy::pedantic)]

/// `data_nexus` package (Data Nexus seed).
pub mod data_nexus {
    include!(concat!(env!("OUT_DIR"), "/data_nexus.rs"));
}

/// `nimbus` package (NimbusGRPC seed).
pub mod nimbus {
    include!(concat!(env!("OUT_DIR"), "/nimbus.rs"));
}

/// `raftmetrics.v1` package (RaftMetrics seed).
pub mod raftmetrics {
    /// `raftmetrics.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/raftmetrics.v1.rs"));
    }
}

/// `datanexus.v1`: record formats on broker topics.
pub mod datanexus {
    /// `datanexus.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/datanexus.v1.rs"));
    }
}

/// `prometheus`: the remote write 1.0 messages (`POST /api/v1/write`).
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Encoded `FileDescriptorSet` of every service and message here, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub use prost;
pub use prost_types;
