//! The candidates standing, as the store lists them, published on a `watch`
//! channel of its own for `/status`, `leaderd status` and `/metrics`.
//!
//! Listing the candidates costs a store request, so it is done on demand:
//! while someone asked within the last minute (a dashboard, a scrape), the
//! list is refreshed every `retry_period`; when nobody asks, never. A
//! candidate at rest thus costs one request per `retry_period` (its presence
//! rides on its acquire or renew), two while it is watched.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::backend::{Backend, Candidate};

/// How long one request for the list keeps it being refreshed.
const INTEREST: Duration = Duration::from_secs(60);

/// The latest list.
#[derive(Debug, Clone, Default)]
pub struct RosterView {
    pub candidates: Vec<Candidate>,
    /// When it was fetched; `None`: never yet.
    pub fetched: Option<Instant>,
    /// When the last refresh ended, successful or not.
    pub attempted: Option<Instant>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
}

/// The refreshing task and the way to ask for the list.
pub struct Roster {
    view: watch::Receiver<RosterView>,
    wanted: Arc<Notify>,
    asked: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
}

impl Roster {
    /// Lists the candidates of `backend` every `every` while asked to.
    /// `lease`: how long a candidate counts as present after it was last
    /// heard of.
    pub fn spawn<B: Backend>(backend: Arc<B>, every: Duration, lease: Duration) -> Roster {
        let (publish, view) = watch::channel(RosterView::default());
        let wanted = Arc::new(Notify::new());
        let asked = Arc::new(Mutex::new(None::<Instant>));
        let task = {
            let (wanted, asked) = (wanted.clone(), asked.clone());
            tokio::spawn(async move {
                loop {
                    let interested =
                        crate::backend::lock(&asked).is_some_and(|at| at.elapsed() < INTEREST);
                    if !interested {
                        wanted.notified().await;
                        continue;
                    }
                    let deadline = Instant::now() + every;
                    let listed = timeout(every, backend.candidates(lease, deadline)).await;
                    publish.send_modify(|view| {
                        view.attempted = Some(Instant::now());
                        match listed {
                            Ok(Ok(candidates)) => {
                                view.candidates = candidates;
                                view.fetched = view.attempted;
                                view.error = None;
                            }
                            Ok(Err(err)) => view.error = Some(err.to_string()),
                            Err(_) => view.error = Some("timed out".to_string()),
                        }
                    });
                    tokio::select! {
                        () = sleep(every) => {}
                        () = wanted.notified() => {}
                    }
                }
            })
        };
        Roster {
            view,
            wanted,
            asked,
            task,
        }
    }

    /// The latest list while it is being kept fresh (someone asked for it
    /// within the last minute), else an empty one; never starts the
    /// refreshing: for readers polled all the time that only want the
    /// leader (`/leader` behind a load balancer).
    pub fn peek(&self) -> RosterView {
        let refreshing =
            crate::backend::lock(&self.asked).is_some_and(|at| at.elapsed() < INTEREST);
        if refreshing {
            self.view.borrow().clone()
        } else {
            RosterView::default()
        }
    }

    /// The list for a reader who wants a current one. While the roster is
    /// being refreshed (someone asked within the last minute) the latest
    /// list is at most one refresh period old: returned at once, never
    /// waiting for the store on the request's path. Only when refreshing had
    /// stopped (nobody asked) or nothing was ever listed does it wait (at
    /// most `patience`) for a refresh.
    pub async fn fresh(&self, patience: Duration) -> RosterView {
        let refreshing =
            crate::backend::lock(&self.asked).is_some_and(|at| at.elapsed() < INTEREST);
        if refreshing && self.view.borrow().fetched.is_some() {
            self.interest();
            return self.view.borrow().clone();
        }
        let asked_at = Instant::now();
        // Wakes the refreshing task (one permit: a second waiter adds none).
        self.interest();
        let mut view = self.view.clone();
        let refreshed = view.wait_for(|v| v.attempted.is_some_and(|at| at >= asked_at));
        let _ = timeout(patience, refreshed).await;
        self.view.borrow().clone()
    }

    fn interest(&self) {
        let mut asked = crate::backend::lock(&self.asked);
        let first = asked.is_none_or(|at| at.elapsed() >= INTEREST);
        *asked = Some(Instant::now());
        if first {
            self.wanted.notify_one();
        }
    }
}

impl Drop for Roster {
    fn drop(&mut self) {
        self.task.abort();
    }
}
