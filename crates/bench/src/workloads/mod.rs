//! The workloads, one file each.

pub mod fanout;
