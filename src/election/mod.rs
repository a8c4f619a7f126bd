//! Leader election proper: the state machine ([`Elector`]) and the state it
//! publishes ([`ElectionState`]) for every other part of leaderd to read;
//! when a leader hands over ([`handover`]); and what operators may see and
//! ask ([`roster`]: the candidates standing, [`steering`]: switchovers).

mod elector;
pub mod handover;
pub mod roster;
mod state;
pub mod steering;
#[cfg(test)]
mod tests;

pub use elector::{Conduct, Elector, Outcome, Resign, Resigner, Timing};
pub use state::{ActionsProgress, ElectionState, LeaderTerm, Reason};
