//! The workloads, one file each.

pub mod cold_join;
pub mod connections;
pub mod fanout;
pub mod restart;
pub mod throughput;
