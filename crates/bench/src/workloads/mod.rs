//! The workloads, one file each.

pub mod cold_join;
pub mod connections;
pub mod durability;
pub mod echo;
pub mod fanout;
pub mod join_storm;
pub mod restart;
pub mod throughput;
