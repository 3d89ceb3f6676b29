//! End-to-end tests: the real gateway binary on loopback, driven by the Rust client.

// A load generator, bench or test of real sockets measures real time: the clock rule
// (clippy.toml) is for the libraries.
#![allow(clippy::disallowed_methods)]

mod abuse;
mod brakes;
mod browser_auth;
mod cluster;
mod delivery;
mod deploy;
mod directory;
mod harness;
mod isolation;
mod keys;
mod lifecycle;
mod live;
mod moderation;
mod openapi;
mod ops;
mod policy;
mod postgres;
mod server_api;
mod suspension;
