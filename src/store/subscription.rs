//! Catch-up subscriptions: history first, then live, from a checkpoint.
//!
//! Pull-based, so backpressure is natural: the subscription holds at most one page of
//! events ([`crate::core::Limits::subscription_buffer_events_max`]) and reads the next page
//! only when its consumer has taken the last one. Works on every [`EventStore`].

use std::collections::VecDeque;

use crate::core::limits::Limits;
use crate::core::types::{GlobalPosition, RecordedEvent};
use crate::store::{EventStore, ReadError};

/// Why a subscription could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription buffer of {requested} events is outside 1..={limit}")]
    BufferSize { requested: usize, limit: usize },
}

/// Reads every event of the store once, in position order, from just after a checkpoint.
#[derive(Debug)]
pub struct CatchUpSubscription<S> {
    store: S,
    next_position: GlobalPosition,
    buffer: VecDeque<RecordedEvent>,
    buffer_events_max: usize,
    /// The last read returned a page shorter than asked for: it reached the end of what
    /// was readable then, so the next read waits for more first (reading again at once
    /// would only return an empty page — one wasted round trip per wake on a remote store).
    reached_end: bool,
}

impl<S: EventStore> CatchUpSubscription<S> {
    /// Starts after `checkpoint` (the position of the last event the consumer processed),
    /// or at the beginning when `None`.
    pub fn new(
        store: S,
        checkpoint: Option<GlobalPosition>,
        buffer_events_max: usize,
        limits: &Limits,
    ) -> Result<CatchUpSubscription<S>, SubscriptionError> {
        let limit = limits.subscription_buffer_events_max;
        if buffer_events_max == 0 || buffer_events_max > limit {
            return Err(SubscriptionError::BufferSize {
                requested: buffer_events_max,
                limit,
            });
        }
        Ok(CatchUpSubscription {
            store,
            next_position: checkpoint.map_or(GlobalPosition::FIRST, GlobalPosition::next),
            buffer: VecDeque::with_capacity(buffer_events_max),
            buffer_events_max,
            reached_end: false,
        })
    }

    /// The next event, waiting for one to be appended when caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent, ReadError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(event);
            }
            if self.reached_end {
                // Returns at once if events were appended meanwhile.
                self.store
                    .wait_for_event_count_above(self.next_position.0)
                    .await?;
            }
            self.fill().await?;
        }
    }

    /// The next event if one is readable now, without waiting for new appends.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, ReadError> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        let page = self
            .store
            .read_all(self.next_position, self.buffer_events_max)
            .await?;
        self.reached_end = page.len() < self.buffer_events_max;
        if !page.is_empty() {
            crate::faultpoint::reach(crate::faultpoint::FaultPoint::CatchUpRead, "subscription")
                .await;
        }
        for event in page {
            assert_eq!(
                event.position, self.next_position,
                "read_all skipped or repeated a position"
            );
            self.next_position = event.position.next();
            self.buffer.push_back(event);
        }
        Ok(())
    }
}
