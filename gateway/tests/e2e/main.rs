//! End-to-end tests: the real gateway binary on loopback, driven by the Rust client.

mod abuse;
mod cluster;
mod delivery;
mod deploy;
mod directory;
mod harness;
mod live;
mod ops;
mod policy;
