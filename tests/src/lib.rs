//! Helpers of the end-to-end tests: what the crash test's child writes, and how to start the
//! real server binary and talk to it.

pub mod crash;
pub mod server;
