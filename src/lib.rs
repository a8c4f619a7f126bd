//! leaderd: a leader-election daemon.
//!
//! The data flows one way: a [`backend`] holds the lease in a store; the
//! [`election`] state machine decides when to acquire, renew, step down and
//! release, and publishes its state on a `watch` channel; [`http`] and
//! [`metrics`] read that state at request time, and [`actions`] (hooks, the
//! leader process, the pod label) act on its changes.

pub mod actions;
pub mod backend;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod election;
pub mod health;
pub mod http;
pub mod kubernetes;
pub mod logging;
pub mod metrics;
pub mod pid1;
pub mod signals;
pub mod status_client;
pub mod switchover_client;
