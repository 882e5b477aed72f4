//! The per-request record shared by the ingress and every instance a
//! request passes through: its id and deadline, why it failed (recorded
//! before a trap unwinds, so the answer and the log are precise), when
//! each filter started and how long it took, the upstream endpoint that
//! answered, and the request's trace (when traces are on).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a request's chain failed, recorded before the trap unwinds so the
/// ingress can answer and log precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    DeadlineExceeded,
    MemoryLimit,
    /// A component trapped or panicked (logged where it happened).
    Trapped,
}

/// Per-request record shared between the ingress and the instance.
pub struct RequestSlot {
    pub(crate) request_id: String,
    deadline: Instant,
    failure: Mutex<Option<Failure>>,
    /// When each filter started and how long it took, by the name it reported.
    times: Mutex<Vec<FilterTime>>,
    /// The upstream endpoint that answered (or was tried last).
    endpoint: Mutex<Option<std::sync::Arc<str>>>,
    trace: Option<std::sync::Arc<crate::traces::RequestTrace>>,
}

/// One filter call: the name it reported, when it started, how long.
pub struct FilterTime {
    pub name: std::sync::Arc<str>,
    pub started: Instant,
    pub took: Duration,
}

impl RequestSlot {
    pub fn new(request_id: &str, timeout: Duration) -> Self {
        Self {
            request_id: request_id.to_owned(),
            deadline: Instant::now() + timeout,
            failure: Default::default(),
            times: Default::default(),
            endpoint: Default::default(),
            trace: None,
        }
    }

    /// The same, for a request being traced.
    pub fn traced(mut self, trace: Option<std::sync::Arc<crate::traces::RequestTrace>>) -> Self {
        self.trace = trace;
        self
    }

    /// The request's trace, if traces are on.
    pub fn trace(&self) -> Option<&crate::traces::RequestTrace> {
        self.trace.as_deref()
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn record_time(&self, component: &std::sync::Arc<str>, started: Instant) {
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(FilterTime {
                name: component.clone(),
                started,
                took: started.elapsed(),
            });
    }

    /// The filter times recorded so far.
    pub fn take_times(&self) -> Vec<FilterTime> {
        std::mem::take(&mut *self.times.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn set_endpoint(&self, endpoint: std::sync::Arc<str>) {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoint);
    }

    /// The upstream endpoint that answered, or was tried last.
    pub fn endpoint(&self) -> Option<std::sync::Arc<str>> {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn failure(&self) -> Option<Failure> {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, f: Failure) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(f);
    }
}
