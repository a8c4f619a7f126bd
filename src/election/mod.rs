//! Leader election proper: the state machine ([`Elector`]) and the state it
//! publishes ([`ElectionState`]) for every other part of leaderd to read.

mod elector;
mod state;
#[cfg(test)]
mod tests;

pub use elector::{Elector, Outcome, Resign, Resigner, Timing};
pub use state::{ActionsProgress, ElectionState, LeaderTerm, Reason};
