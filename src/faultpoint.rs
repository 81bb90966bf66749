//! Fault points (F12, FoundationDB's BUGGIFY generalised): named places in the production
//! code where a fault does the most harm — between a group's write and its sync, between
//! a sync and the group's publication, between taking a dispatch lease and reading it
//! back, between deciding an unlock's outcome and recording it, right after a dispatcher
//! checkpoint is saved, at a subscription's catch-up, between a command's load and its
//! append. Code reaching one writes `faultpoint::reach(FaultPoint::X, subject).await`.
//!
//! Outside the simulator this is an empty `async fn`: no state, no branch, nothing to
//! configure (the body is compiled only with `--cfg madsim`). Inside it, the simulator
//! installs a hook for the seed's thread ([`install`]) that decides, from the seed's plan,
//! whether to act there — pause, stall until something happens elsewhere, or crash the
//! machine — and counts every point reached, which the swarm prints as coverage.

use std::fmt;

/// A dangerous moment in the production code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultPoint {
    /// The log wrote a group's bytes; the sync that makes them durable has not run.
    GroupWritten,
    /// A group is durable; readers and its appenders have not been told.
    GroupSynced,
    /// A node appended its take of a station's dispatch lease; it has not read it back.
    LeaseTaken,
    /// A node decided an unlock's outcome; it has not recorded it.
    OutcomeDecided,
    /// A node saved its dispatcher's checkpoint.
    CheckpointSaved,
    /// A catch-up subscription read a page of history; it has not delivered it.
    CatchUpRead,
    /// A command handler loaded and decided; it has not appended. The subject is the
    /// stream and the command id, separated by a space.
    CommandDecided,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 7] = [
        FaultPoint::GroupWritten,
        FaultPoint::GroupSynced,
        FaultPoint::LeaseTaken,
        FaultPoint::OutcomeDecided,
        FaultPoint::CheckpointSaved,
        FaultPoint::CatchUpRead,
        FaultPoint::CommandDecided,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::GroupWritten => "group-written",
            FaultPoint::GroupSynced => "group-synced",
            FaultPoint::LeaseTaken => "lease-taken",
            FaultPoint::OutcomeDecided => "outcome-decided",
            FaultPoint::CheckpointSaved => "checkpoint-saved",
            FaultPoint::CatchUpRead => "catch-up-read",
            FaultPoint::CommandDecided => "command-decided",
        }
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reaches `point` for `subject` (a station, a stream, a segment). Empty outside the
/// simulator; inside, whatever the seed's hook does there.
#[cfg(not(madsim))]
#[inline(always)]
pub async fn reach(_point: FaultPoint, _subject: &str) {}

/// Reaches `point` for `subject` (a station, a stream, a segment). Empty outside the
/// simulator; inside, whatever the seed's hook does there.
#[cfg(madsim)]
pub async fn reach(point: FaultPoint, subject: &str) {
    let action = HOOK.with(|hook| hook.borrow().as_ref().map(|hook| hook(point, subject)));
    if let Some(Some(action)) = action {
        action.await;
    }
}

/// What a hook makes the code at a point wait for (a pause, a stall, forever for a crash).
#[cfg(madsim)]
pub type Action = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Decides at each point reached whether to act; `None` goes straight on.
#[cfg(madsim)]
pub type Hook = dyn Fn(FaultPoint, &str) -> Option<Action>;

#[cfg(madsim)]
std::thread_local! {
    static HOOK: std::cell::RefCell<Option<std::rc::Rc<Hook>>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs `hook` for the current thread (one simulated run) until the guard drops.
#[cfg(madsim)]
pub fn install(hook: std::rc::Rc<Hook>) -> Installed {
    HOOK.with(|slot| *slot.borrow_mut() = Some(hook));
    Installed(())
}

/// Removes the thread's hook when dropped.
#[cfg(madsim)]
pub struct Installed(());

#[cfg(madsim)]
impl Drop for Installed {
    fn drop(&mut self) {
        HOOK.with(|slot| *slot.borrow_mut() = None);
    }
}
