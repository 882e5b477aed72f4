//! The per-request record shared by the ingress and every instance a
//! request passes through: its id and deadline, why it failed (recorded
//! before a trap unwinds, so the answer and the log are precise), the
//! time each filter took, and the upstream endpoint that answered.

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
    /// Time each filter took, by the name it reported.
    times: Mutex<Vec<(std::sync::Arc<str>, Duration)>>,
    /// The upstream endpoint that answered (or was tried last).
    endpoint: Mutex<Option<std::sync::Arc<str>>>,
}

impl RequestSlot {
    pub fn new(request_id: &str, timeout: Duration) -> Self {
        Self {
            request_id: request_id.to_owned(),
            deadline: Instant::now() + timeout,
            failure: Default::default(),
            times: Default::default(),
            endpoint: Default::default(),
        }
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn record_time(&self, component: &std::sync::Arc<str>, took: Duration) {
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((component.clone(), took));
    }

    /// The filter times recorded so far.
    pub fn take_times(&self) -> Vec<(std::sync::Arc<str>, Duration)> {
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
