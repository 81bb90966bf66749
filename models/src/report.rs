//! Runs a model to completion and reports it the way the CLI prints it and the tests
//! assert it: how much was explored, and each property's verdict with its path.

use std::fmt::{self, Display};
use std::hash::Hash;
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, Model, Representative};

/// One property's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub name: &'static str,
    /// `always` or `sometimes`.
    pub kind: &'static str,
    /// An `always` property held on every state, or a `sometimes` one was reached.
    pub holds: bool,
    /// The counterexample (`always`) or example (`sometimes`), one readable step each.
    pub path: Option<Vec<String>>,
}

/// What one exhaustive check found.
#[derive(Clone, Debug)]
pub struct Report {
    pub states: usize,
    pub unique_states: usize,
    pub max_depth: usize,
    pub elapsed: Duration,
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// The verdict of property `name`.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.name == name)
    }

    /// True when every property is as it should be.
    pub fn all_hold(&self) -> bool {
        self.verdicts.iter().all(|v| v.holds)
    }
}

/// How the state space is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    Bfs,
    /// Depth first.
    Dfs,
}

/// Explores `model` exhaustively (within its own bounds) on `threads` threads.
pub fn check<M>(model: M, search: Search, threads: usize) -> Report
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Hash + PartialEq + fmt::Debug + Clone + Send + Sync + 'static,
    M::Action: fmt::Debug + Display + Clone + PartialEq + Send + Sync + 'static,
{
    explore(model, search, threads, None)
}

/// [`check`] depth first with symmetry reduction: a state equal to one already visited
/// up to the model's symmetry ([`Representative`]) is not explored again. (stateright
/// applies symmetry in its depth-first checker only.)
pub fn check_symmetric<M>(model: M, threads: usize) -> Report
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Representative + Hash + PartialEq + fmt::Debug + Clone + Send + Sync + 'static,
    M::Action: fmt::Debug + Display + Clone + PartialEq + Send + Sync + 'static,
{
    explore(model, Search::Dfs, threads, Some(M::State::representative))
}

/// Maps a state to the representative of its symmetry class.
type RepresentativeFn<M> = fn(&<M as Model>::State) -> <M as Model>::State;

fn explore<M>(
    model: M,
    search: Search,
    threads: usize,
    symmetry: Option<RepresentativeFn<M>>,
) -> Report
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Hash + PartialEq + fmt::Debug + Clone + Send + Sync + 'static,
    M::Action: fmt::Debug + Display + Clone + PartialEq + Send + Sync + 'static,
{
    let properties = model.properties();
    let started = Instant::now();
    let mut builder = model.clone().checker().threads(threads.max(1));
    if let Some(representative) = symmetry {
        builder = builder.symmetry_fn(representative);
    }
    let checker: Box<dyn Checker<M>> = match search {
        Search::Bfs => Box::new(builder.spawn_bfs()),
        Search::Dfs => Box::new(builder.spawn_dfs()),
    };
    // join() consumes; for a boxed checker wait on its handles instead.
    let mut checker = checker;
    for handle in checker.handles() {
        let _ = handle.join();
    }
    let elapsed = started.elapsed();
    let verdicts = properties
        .iter()
        .map(|property| {
            // The checker's path may run on past the state that decides the property; cut
            // it there, so a counterexample ends where the invariant first breaks.
            let found = checker.discovery(property.name);
            let path = found.map(|path| {
                let mut steps = Vec::new();
                let mut last_action = None;
                for (state, action) in path.into_vec() {
                    if let Some(done) = last_action.take() {
                        steps.push(done);
                    }
                    let decided = match property.expectation {
                        Expectation::Sometimes => (property.condition)(checker.model(), &state),
                        _ => !(property.condition)(checker.model(), &state),
                    };
                    if decided {
                        break;
                    }
                    last_action = action.map(|a| a.to_string());
                }
                steps
            });
            let (kind, holds) = match property.expectation {
                Expectation::Always => ("always", path.is_none()),
                Expectation::Sometimes => ("sometimes", path.is_some()),
                Expectation::Eventually => ("eventually", path.is_none()),
            };
            Verdict {
                name: property.name,
                kind,
                holds,
                path,
            }
        })
        .collect();
    Report {
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        elapsed,
        verdicts,
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "states explored {} · unique {} · max depth {} · {:.3} s",
            self.states,
            self.unique_states,
            self.max_depth,
            self.elapsed.as_secs_f64()
        )?;
        for verdict in &self.verdicts {
            let word = match (verdict.kind, verdict.holds) {
                ("sometimes", true) => "reached",
                ("sometimes", false) => "NEVER REACHED",
                (_, true) => "holds",
                (_, false) => "VIOLATED",
            };
            writeln!(f, "  {:<9} {:<14} {}", verdict.kind, word, verdict.name)?;
            if !verdict.holds
                && verdict.kind != "sometimes"
                && let Some(path) = &verdict.path
            {
                writeln!(f, "    counterexample, {} steps:", path.len())?;
                for (index, step) in path.iter().enumerate() {
                    writeln!(f, "    {:>3}. {step}", index + 1)?;
                }
            }
        }
        Ok(())
    }
}
