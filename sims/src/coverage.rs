//! Coverage (stateright's `sometimes`, Antithesis's reachability): the dangerous
//! situations a seed reached. The swarm prints, for each, how many seeds reached it;
//! `--require-coverage` fails the swarm when a required one was never reached — a green
//! run that never went where the bugs are proves nothing.

use std::collections::BTreeMap;

use evsource::faultpoint::FaultPoint;

/// Situation → how often one seed reached it.
pub type Coverage = BTreeMap<&'static str, u64>;

pub const LEASE_TAKEN_OVER_IN_FLIGHT: &str = "a dispatch lease taken over with a request in flight";
pub const TORN_TAIL_RECOVERED: &str = "a torn tail cut at recovery";
pub const CRASH_IN_GROUP_COMMIT: &str = "a crash inside a group commit (dirty-read window open)";
pub const CRASH_AFTER_CHECKPOINT: &str = "a node crashed right after saving its checkpoint";
pub const UNKNOWN_SETTLED: &str = "an outcome unknown settled by retry";
pub const OLDER_SNAPSHOT: &str = "a snapshot of an older schema loaded";
pub const READ_FLIP_CAUGHT: &str = "a read-back bit flip struck (the checksum must catch it)";
pub const DAMAGE_REFUSED: &str = "damage at rest refused, naming file and offset";
pub const OLD_NODE_MET_NEW_DATA: &str =
    "rolling upgrade: the current build wrote after the next build on a station stream";
pub const IMPOSTOR_REFUSED: &str = "an impostor station refused at the handshake (F11)";
pub const NEW_NODE_MET_OLD_DATA: &str =
    "rolling upgrade: the next build wrote after the current build on a station stream";

/// What a fault point firing is called in the coverage table.
pub fn fired(point: FaultPoint) -> &'static str {
    match point {
        FaultPoint::GroupWritten => "fault point group-written fired",
        FaultPoint::GroupSynced => "fault point group-synced fired",
        FaultPoint::LeaseTaken => "fault point lease-taken fired",
        FaultPoint::OutcomeDecided => "fault point outcome-decided fired",
        FaultPoint::CheckpointSaved => "fault point checkpoint-saved fired",
        FaultPoint::CatchUpRead => "fault point catch-up-read fired",
        FaultPoint::CommandDecided => "fault point command-decided fired",
    }
}

/// Every situation a bounded swarm of all scenarios must reach.
pub fn required() -> Vec<&'static str> {
    let mut required = vec![
        LEASE_TAKEN_OVER_IN_FLIGHT,
        TORN_TAIL_RECOVERED,
        CRASH_IN_GROUP_COMMIT,
        CRASH_AFTER_CHECKPOINT,
        UNKNOWN_SETTLED,
        OLDER_SNAPSHOT,
        READ_FLIP_CAUGHT,
        DAMAGE_REFUSED,
        OLD_NODE_MET_NEW_DATA,
        NEW_NODE_MET_OLD_DATA,
        IMPOSTOR_REFUSED,
    ];
    required.extend(FaultPoint::ALL.into_iter().map(fired));
    required
}

/// Adds `count` to `situation` (nothing for zero: the table lists what was reached).
pub fn note(coverage: &mut Coverage, situation: &'static str, count: u64) {
    if count > 0 {
        *coverage.entry(situation).or_default() += count;
    }
}

/// The fault points that fired in a run.
pub fn note_points(coverage: &mut Coverage, counts: &crate::points::PointCounts) {
    for (point, fired_count) in &counts.fired {
        note(coverage, fired(*point), *fired_count);
    }
}

/// What a run's simulated store server went through: the fault points that fired, the
/// crashes they caused inside group commits, the torn tails its reopenings cut and the
/// read flips its disk served.
pub fn note_store_server(
    coverage: &mut Coverage,
    points: &crate::points::PointCounts,
    crashes_in_group_commit: u64,
    torn_tails: u64,
    disk: &evsource::storage::SimDisk,
) {
    note_points(coverage, points);
    note(coverage, CRASH_IN_GROUP_COMMIT, crashes_in_group_commit);
    note(coverage, TORN_TAIL_RECOVERED, torn_tails);
    note(coverage, READ_FLIP_CAUGHT, disk.stats().flips_struck);
}
