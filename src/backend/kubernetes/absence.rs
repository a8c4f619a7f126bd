//! How long the election's Lease has been missing, as far as this
//! candidate can vouch for it.
//!
//! A Lease found missing may have been deleted under a holder that still
//! acts until its safe-until, so it is created only after it has been
//! missing for one lease. Two looks that both find it missing say nothing
//! about the time between them, though: a candidate starved (or frozen)
//! between them may have missed a whole term that began and was deleted
//! meanwhile. So the time counts only across a chain of looks close
//! together (no gap longer than one lease) during which the watch of the
//! Lease heard nothing; a longer gap, or any news from the watch, starts
//! the count again from the look that ends it.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Absence {
    chain: Option<Chain>,
    told: bool,
}

#[derive(Debug)]
struct Chain {
    /// The first look of the chain.
    since: Instant,
    last_look: Instant,
    /// The watch's count of changes heard, at the last look.
    news: u64,
}

impl Absence {
    /// The Lease was found present: the absence, if any, is over (and the
    /// next one is worth saying again).
    pub fn ended(&mut self) {
        self.chain = None;
        self.told = false;
    }

    /// The Lease was found missing at `now`, with the watch having heard
    /// `news` changes so far; a look more than `gap` after the previous one
    /// starts a new chain. Returns since when it has been missing for sure.
    pub fn missing(&mut self, now: Instant, news: u64, gap: Duration) -> Instant {
        match &mut self.chain {
            Some(chain)
                if now.saturating_duration_since(chain.last_look) <= gap && chain.news == news =>
            {
                chain.last_look = now;
                chain.since
            }
            _ => {
                self.chain = Some(Chain {
                    since: now,
                    last_look: now,
                    news,
                });
                now
            }
        }
    }

    /// Whether this is the first time it is asked (to say it once).
    pub fn first_mention(&mut self) -> bool {
        !std::mem::replace(&mut self.told, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(2);

    #[test]
    fn close_quiet_looks_keep_counting_from_the_first() {
        let t0 = Instant::now();
        let mut absence = Absence::default();
        assert_eq!(absence.missing(t0, 1, LEASE), t0);
        for i in 1..=10 {
            let at = t0 + Duration::from_millis(300 * i);
            assert_eq!(absence.missing(at, 1, LEASE), t0);
        }
    }

    #[test]
    fn a_long_gap_or_news_starts_again() {
        let t0 = Instant::now();
        let mut absence = Absence::default();
        absence.missing(t0, 1, LEASE);
        let starved = t0 + LEASE + Duration::from_millis(1);
        assert_eq!(absence.missing(starved, 1, LEASE), starved);
        let heard = starved + Duration::from_millis(100);
        assert_eq!(absence.missing(heard, 2, LEASE), heard);
        assert_eq!(absence.missing(heard + LEASE, 2, LEASE), heard);
    }

    #[test]
    fn a_sighting_ends_the_chain() {
        let t0 = Instant::now();
        let mut absence = Absence::default();
        absence.missing(t0, 1, LEASE);
        absence.ended();
        let later = t0 + Duration::from_millis(100);
        assert_eq!(absence.missing(later, 1, LEASE), later);
        assert!(absence.first_mention());
        assert!(!absence.first_mention());
    }
}
