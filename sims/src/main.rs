//! `evsource-sim`: run one seed or a swarm of seeds of the simulation scenarios.
//! Usually started through `cargo xtask sim`, which builds it with `--cfg madsim`.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "evsource-sim runs only in a simulation build. Use `cargo xtask sim` (it builds with \
         RUSTFLAGS=\"--cfg madsim\" in target/sim)."
    );
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
mod cli {
    use std::collections::BTreeMap;
    use std::io::{IsTerminal, Write};
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use evsource::oracles::Violation;
    use evsource::oracles::history::HistoryStats;
    use evsource_sims::bank::{self, BankWorkload};
    use evsource_sims::coverage::{self, Coverage};
    use evsource_sims::decider_scenario;
    use evsource_sims::faults::{Design, FaultCounts, FaultPlan};
    use evsource_sims::points::Points;
    use evsource_sims::projection_catchup;
    use evsource_sims::seats::SeatBooking;
    use evsource_sims::store_fuzz;
    use evsource_sims::timeline::Timeline;
    use evsource_sims::unlock_race::{self, UnlockRace};
    use evsource_sims::{Panicked, StoreHistory};
    use madsim::rand::Rng;

    const USAGE: &str = "usage:
  evsource-sim                                  default swarm: 200 seeds of all scenarios
  evsource-sim swarm --seeds N [--first S] [--scenario X] [--design D] [--jobs J] [SHAPE]
                     [--require-coverage]   fail if a dangerous situation was never reached
  evsource-sim run --seed S [--scenario X] [--design D] [SHAPE] [--trace FILE] [--check-determinism]
  evsource-sim shrink --seed S [--scenario X] [--design D]
                                                smallest shape in which seed S still fails

SHAPE (what `shrink` prints; each narrows or resizes the seed's own run):
  --without F1,F4,…   switch fault kinds off (F1 F2 F3 F4 F5 F6 F7 F9 F11 F12)
  --fault-phase SECS  inject faults for at most this long
  --clients N  --requests N  --stations N      (unlock-race) the workload's size

scenarios: unlock-race, withdraw, double-submit, seats, projection-catchup,
           store-fuzz, rolling-upgrade, all (a seed-chosen mix; the default);
           panic-canary (the harness's self-test: every seed panics, the swarm must fail)
designs:   correct (default); naive-side-effect (N1, unlock-race),
           naive-early-checkpoint (N4, unlock-race),
           naive-telemetry-in-aggregate (N5, unlock-race),
           naive-no-fencing (unlock-race),
           naive-read-model (N2, withdraw), naive-version-check (N3, double-submit),
           naive-projection-checkpoint (N6, projection-catchup)";

    /// A scenario the simulator can run.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Scenario {
        UnlockRace,
        Withdraw,
        DoubleSubmit,
        Seats,
        ProjectionCatchup,
        StoreFuzz,
        RollingUpgrade,
        /// The harness's self-test: every seed panics (never in the `all` mix).
        PanicCanary,
    }

    impl Scenario {
        const ALL: [Scenario; 7] = [
            Scenario::UnlockRace,
            Scenario::Withdraw,
            Scenario::DoubleSubmit,
            Scenario::Seats,
            Scenario::ProjectionCatchup,
            Scenario::StoreFuzz,
            Scenario::RollingUpgrade,
        ];

        /// Scenarios that test the harness itself: named on the command line only.
        const SELF_TESTS: [Scenario; 1] = [Scenario::PanicCanary];

        fn name(self) -> &'static str {
            match self {
                Scenario::UnlockRace => "unlock-race",
                Scenario::Withdraw => "withdraw",
                Scenario::DoubleSubmit => "double-submit",
                Scenario::Seats => "seats",
                Scenario::ProjectionCatchup => "projection-catchup",
                Scenario::StoreFuzz => "store-fuzz",
                Scenario::RollingUpgrade => "rolling-upgrade",
                Scenario::PanicCanary => "panic-canary",
            }
        }

        /// The scenario a naive design reproduces its mistake in.
        fn of_design(design: Design) -> Option<Scenario> {
            match design {
                Design::Correct => None,
                Design::NaiveEarlyCheckpoint
                | Design::NaiveSideEffect
                | Design::NaiveTelemetry
                | Design::NaiveNoFencing => Some(Scenario::UnlockRace),
                Design::NaiveReadModel => Some(Scenario::Withdraw),
                Design::NaiveVersionCheck => Some(Scenario::DoubleSubmit),
                Design::NaiveProjectionCheckpoint => Some(Scenario::ProjectionCatchup),
            }
        }
    }

    /// Which scenarios a run may pick from.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Selection {
        One(Scenario),
        /// Each seed picks one.
        All,
    }

    /// Narrows a seed's run: fewer faults, a shorter fault phase, a smaller workload. The
    /// seed still draws everything it would; the shape is applied to what it drew.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Shape {
        without: std::collections::BTreeSet<&'static str>,
        fault_phase_secs: Option<u64>,
        clients: Option<u64>,
        requests: Option<u64>,
        stations: Option<usize>,
    }

    impl Shape {
        fn apply_to_plan(&self, plan: &mut FaultPlan) {
            for kind in &self.without {
                plan.switch_off(kind);
            }
            if let Some(secs) = self.fault_phase_secs {
                plan.fault_phase = plan.fault_phase.min(Duration::from_secs(secs));
            }
        }

        fn apply_to_race(&self, race: &mut UnlockRace) {
            if let Some(clients) = self.clients {
                race.clients = clients;
            }
            if let Some(requests) = self.requests {
                race.requests_per_client = requests;
            }
            if let Some(stations) = self.stations {
                race.stations = stations;
            }
        }

        /// The command-line flags that give this shape.
        fn flags(&self) -> String {
            let mut flags = String::new();
            if !self.without.is_empty() {
                let kinds: Vec<&str> = self.without.iter().copied().collect();
                flags.push_str(&format!(" --without {}", kinds.join(",")));
            }
            let mut number = |flag: &str, value: Option<u64>| {
                if let Some(value) = value {
                    flags.push_str(&format!(" {flag} {value}"));
                }
            };
            number("--fault-phase", self.fault_phase_secs);
            number("--clients", self.clients);
            number("--requests", self.requests);
            number("--stations", self.stations.map(|s| s as u64));
            flags
        }
    }

    #[derive(Debug)]
    struct Options {
        command: Command,
        selection: Selection,
        design: Design,
        shape: Shape,
        jobs: usize,
        check_determinism: bool,
        /// The swarm fails when a required dangerous situation was never reached.
        require_coverage: bool,
        trace: Option<String>,
    }

    #[derive(Debug)]
    enum Command {
        Run { seed: u64 },
        Shrink { seed: u64 },
        Swarm { first: u64, seeds: u64 },
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        // The main job (no arguments) is a swarm that must also reach every dangerous
        // situation.
        let mut require_coverage = args.is_empty();
        let (command, rest) = match args.first().map(String::as_str) {
            None => ("swarm", &args[..0]),
            Some("run") => ("run", &args[1..]),
            Some("shrink") => ("shrink", &args[1..]),
            Some("swarm") => ("swarm", &args[1..]),
            Some(other) => return Err(format!("unknown command '{other}'")),
        };
        let mut values: BTreeMap<&str, &str> = BTreeMap::new();
        let mut check_determinism = false;
        let mut index = 0;
        while index < rest.len() {
            let flag = rest[index].as_str();
            if flag == "--check-determinism" {
                check_determinism = true;
                index += 1;
                continue;
            }
            if flag == "--require-coverage" {
                require_coverage = true;
                index += 1;
                continue;
            }
            let known = [
                "--trace",
                "--seed",
                "--seeds",
                "--first",
                "--scenario",
                "--design",
                "--jobs",
                "--without",
                "--fault-phase",
                "--clients",
                "--requests",
                "--stations",
            ];
            if !known.contains(&flag) {
                return Err(format!("unknown option '{flag}'"));
            }
            let value = rest
                .get(index + 1)
                .ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(flag, value.as_str());
            index += 2;
        }
        let number = |flag: &str, default: Option<u64>| -> Result<u64, String> {
            match values.get(flag) {
                Some(text) => text
                    .parse()
                    .map_err(|_| format!("{flag} takes a whole number, not '{text}'")),
                None => default.ok_or_else(|| format!("{flag} is required")),
            }
        };
        let design_name = values.get("--design").copied().unwrap_or("correct");
        let design = Design::parse(design_name).ok_or_else(|| {
            let known: Vec<&str> = Design::ALL.iter().map(|d| d.name()).collect();
            format!(
                "unknown design '{design_name}'; known: {}",
                known.join(", ")
            )
        })?;
        let selection = match values.get("--scenario").copied().unwrap_or("all") {
            "all" => match Scenario::of_design(design) {
                Some(scenario) => Selection::One(scenario),
                None => Selection::All,
            },
            name => {
                let scenario = Scenario::ALL
                    .into_iter()
                    .chain(Scenario::SELF_TESTS)
                    .find(|s| s.name() == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                        format!(
                            "unknown scenario '{name}'; known: {}, all",
                            known.join(", ")
                        )
                    })?;
                if Scenario::of_design(design).is_some_and(|own| own != scenario) {
                    return Err(format!(
                        "design '{}' applies to scenario '{}', not '{name}'",
                        design.name(),
                        Scenario::of_design(design).map_or("", Scenario::name)
                    ));
                }
                Selection::One(scenario)
            }
        };
        let default_jobs = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let jobs = number("--jobs", Some(default_jobs))?.max(1) as usize;
        let mut shape = Shape::default();
        if let Some(list) = values.get("--without") {
            for kind in list.split(',') {
                let known = FaultPlan::KINDS
                    .into_iter()
                    .find(|k| k.eq_ignore_ascii_case(kind.trim()))
                    .ok_or_else(|| {
                        format!(
                            "--without takes fault kinds ({}), not '{kind}'",
                            FaultPlan::KINDS.join(" ")
                        )
                    })?;
                shape.without.insert(known);
            }
        }
        let positive = |flag: &str| -> Result<Option<u64>, String> {
            match values.get(flag) {
                None => Ok(None),
                Some(_) => match number(flag, None)? {
                    0 => Err(format!("{flag} must be at least 1")),
                    n => Ok(Some(n)),
                },
            }
        };
        shape.fault_phase_secs = positive("--fault-phase")?;
        shape.clients = positive("--clients")?;
        shape.requests = positive("--requests")?;
        shape.stations = positive("--stations")?.map(|n| n.min(200) as usize);
        let command = if command == "run" {
            Command::Run {
                seed: number("--seed", None)?,
            }
        } else if command == "shrink" {
            if shape != Shape::default() {
                return Err("shrink starts from the seed's full run; drop the shape flags".into());
            }
            Command::Shrink {
                seed: number("--seed", None)?,
            }
        } else {
            Command::Swarm {
                first: number("--first", Some(1))?,
                seeds: number("--seeds", Some(200))?,
            }
        };
        if require_coverage && !matches!(command, Command::Swarm { .. }) {
            return Err("--require-coverage goes with a swarm".into());
        }
        if check_determinism && !matches!(command, Command::Run { .. }) {
            return Err("--check-determinism goes with `run --seed S`".into());
        }
        Ok(Options {
            command,
            selection,
            design,
            shape,
            jobs,
            check_determinism,
            require_coverage,
            trace: values.get("--trace").map(|path| (*path).to_owned()),
        })
    }

    /// What one seed did.
    struct SeedResult {
        scenario: Scenario,
        plan: FaultPlan,
        verdict: Result<String, Violation>,
        faults: FaultCounts,
        simulated: Duration,
        /// Hash of the stored history (zero for a bank run that failed).
        fingerprint: u128,
        /// The store calls to judge once the simulation is over (I11), if recorded.
        store_history: Option<StoreHistory>,
        /// What the history check covered and cost.
        checked: HistoryStats,
        /// The dangerous situations the seed reached.
        coverage: Coverage,
        /// The machines of the run, in words.
        topology: String,
    }

    /// One run inside the current simulation runtime.
    async fn simulate(
        selection: Selection,
        design: Design,
        shape: Shape,
        picked: Arc<OnceLock<Scenario>>,
    ) -> SeedResult {
        // Always draw, so that `--scenario X` replays exactly the run in which `all`
        // picked X: the same draws happen in the same order.
        // Exactly one draw, whatever the number of scenarios: a run with a named scenario
        // stays the same run when scenarios are added.
        let draw: u64 = madsim::rand::thread_rng().r#gen();
        let drawn = Scenario::ALL[(draw % Scenario::ALL.len() as u64) as usize];
        let scenario = match selection {
            Selection::One(scenario) => scenario,
            Selection::All => drawn,
        };
        let _ = picked.set(scenario);
        let mut plan = FaultPlan::draw();
        shape.apply_to_plan(&mut plan);
        let started = tokio::time::Instant::now();
        // The scenarios on their own machines install the seed's fault points themselves
        // (they carry out the crashes the points ask for); the in-process ones get them
        // here, where a crash point pauses instead.
        let in_process = !matches!(
            scenario,
            Scenario::UnlockRace | Scenario::RollingUpgrade | Scenario::StoreFuzz
        );
        let points = in_process.then(|| Points::install(plan.points.clone()).0);
        let mut result = run_scenario(scenario, plan, design, &shape, started).await;
        if let Some(points) = points {
            coverage::note_points(&mut result.coverage, &points.counts());
        }
        result
    }

    async fn run_scenario(
        scenario: Scenario,
        plan: FaultPlan,
        design: Design,
        shape: &Shape,
        started: tokio::time::Instant,
    ) -> SeedResult {
        match scenario {
            Scenario::UnlockRace | Scenario::RollingUpgrade => {
                let mut race = UnlockRace {
                    faults: plan.clone(),
                    design,
                    upgrade: scenario == Scenario::RollingUpgrade,
                    ..UnlockRace::default()
                };
                shape.apply_to_race(&mut race);
                let topology = race.topology();
                let report = unlock_race::run(&race).await;
                let verdict = report.verdict.map(|s| {
                    format!(
                        "{} requests, {} accepted, {} rejected, {} timed out, {} physical unlocks",
                        s.requests, s.accepted, s.rejected, s.timed_out, s.actuations
                    )
                });
                SeedResult {
                    scenario,
                    plan,
                    verdict,
                    faults: report.faults,
                    simulated: report.simulated,
                    fingerprint: report.fingerprint,
                    store_history: Some(report.history),
                    checked: HistoryStats::default(),
                    coverage: report.coverage,
                    topology,
                }
            }
            Scenario::StoreFuzz => {
                let report = store_fuzz::run(&plan).await;
                SeedResult {
                    scenario,
                    plan,
                    verdict: report.verdict.map(|s| {
                        format!(
                            "{} backend, {} calls, {} events stored; damage at rest: {}",
                            s.backend, s.calls, s.events, s.damage
                        )
                    }),
                    faults: report.faults,
                    simulated: started.elapsed(),
                    fingerprint: report.fingerprint,
                    store_history: Some(report.history),
                    checked: HistoryStats::default(),
                    coverage: report.coverage,
                    topology: report.topology,
                }
            }
            Scenario::PanicCanary => {
                let site = evsource_sims::canary::run().await;
                let outcome = Ok((format!("the canary panicked ({site:?})"), 0));
                in_process_result(scenario, plan, outcome, started)
            }
            Scenario::ProjectionCatchup => {
                let outcome = projection_catchup::run(design, &plan).await.map(|s| {
                    (
                        format!(
                            "{} events, {} projector crashes",
                            s.events, s.projector_crashes
                        ),
                        s.fingerprint,
                    )
                });
                in_process_result(scenario, plan, outcome, started)
            }
            Scenario::Seats => {
                let outcome = decider_scenario::run::<SeatBooking>(&plan).await.map(|s| {
                    (
                        format!(
                            "{} commands, {} applied, {} rejected",
                            s.commands, s.applied, s.rejected
                        ),
                        s.fingerprint,
                    )
                });
                in_process_result(scenario, plan, outcome, started)
            }
            Scenario::Withdraw | Scenario::DoubleSubmit => {
                let workload = if scenario == Scenario::Withdraw {
                    BankWorkload::Withdraw
                } else {
                    BankWorkload::DoubleSubmit
                };
                let outcome = bank::run(workload, design, &plan).await.map(|s| {
                    (
                        format!(
                            "{} commands, {} withdrawals applied, {} refused",
                            s.commands, s.withdrawals_applied, s.withdrawals_refused
                        ),
                        s.fingerprint,
                    )
                });
                in_process_result(scenario, plan, outcome, started)
            }
        }
    }

    /// The result of a scenario without node faults: a summary and a history fingerprint,
    /// or a violation.
    fn in_process_result(
        scenario: Scenario,
        plan: FaultPlan,
        outcome: Result<(String, u128), Violation>,
        started: tokio::time::Instant,
    ) -> SeedResult {
        let fingerprint = outcome.as_ref().map_or(0, |(_, fingerprint)| *fingerprint);
        SeedResult {
            scenario,
            plan,
            verdict: outcome.map(|(summary, _)| summary),
            faults: FaultCounts::default(),
            simulated: started.elapsed(),
            fingerprint,
            store_history: None,
            checked: HistoryStats::default(),
            coverage: Coverage::new(),
            topology: format!(
                "one simulated machine: the store and the scenario's concurrent clients ({})",
                scenario.name()
            ),
        }
    }

    /// Runs one seed (see [`evsource_sims::on_fresh_thread`] for why a fresh thread).
    fn run_seed(seed: u64, selection: Selection, design: Design, shape: &Shape) -> SeedResult {
        let owned = shape.clone();
        let picked = Arc::new(OnceLock::new());
        let told = picked.clone();
        let outcome =
            evsource_sims::on_fresh_thread(seed, move || simulate(selection, design, owned, told));
        settle(outcome, &picked, selection)
    }

    /// A seed's result, or — when anything in it panicked — a failure of I14 that names
    /// the panic, in the scenario the seed had picked (I14: no green on a panic).
    fn settle(
        outcome: Result<SeedResult, Panicked>,
        picked: &OnceLock<Scenario>,
        selection: Selection,
    ) -> SeedResult {
        let mut result = outcome.unwrap_or_else(|panicked| {
            let scenario = picked.get().copied().unwrap_or(match selection {
                Selection::One(scenario) => scenario,
                Selection::All => Scenario::UnlockRace,
            });
            SeedResult {
                scenario,
                plan: FaultPlan::none(),
                verdict: Err(Violation {
                    invariant: "I14",
                    detail: format!("the seed {panicked}"),
                }),
                faults: FaultCounts::default(),
                simulated: Duration::ZERO,
                fingerprint: 0,
                store_history: None,
                checked: HistoryStats::default(),
                coverage: Coverage::new(),
                topology: "unknown: the seed panicked before its machines were reported".into(),
            }
        });
        // I11, on real time: the scenario's own oracles first, then its store history.
        if let Some(history) = result.store_history.take()
            && result.verdict.is_ok()
        {
            match history.judge() {
                Ok(stats) => {
                    coverage::note(
                        &mut result.coverage,
                        coverage::UNKNOWN_SETTLED,
                        stats.unknowns_settled,
                    );
                    result.checked = stats;
                }
                Err(violation) => result.verdict = Err(violation),
            }
        }
        result
    }

    fn repro(seed: u64, scenario: Option<Scenario>, design: Design, shape: &Shape) -> String {
        format!("repro: {}", command_line(seed, scenario, design, shape))
    }

    fn command_line(
        seed: u64,
        scenario: Option<Scenario>,
        design: Design,
        shape: &Shape,
    ) -> String {
        let mut line = format!("cargo xtask sim run --seed {seed}");
        if let Some(scenario) = scenario {
            line.push_str(&format!(" --scenario {}", scenario.name()));
        }
        if design != Design::Correct {
            line.push_str(&format!(" --design {}", design.name()));
        }
        line.push_str(&shape.flags());
        line
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let options = match parse(&args) {
            Ok(options) => options,
            Err(error) => {
                eprintln!("error: {error}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match options.command {
            Command::Run { seed } if options.check_determinism => {
                check_determinism(seed, options.selection, options.design, &options.shape)
            }
            Command::Run { seed } => run_one(
                seed,
                options.selection,
                options.design,
                &options.shape,
                options.trace.as_deref(),
            ),
            Command::Shrink { seed } => shrink(seed, options.selection, options.design),
            Command::Swarm { first, seeds } => swarm(
                first,
                seeds,
                options.jobs,
                options.selection,
                options.design,
                &options.shape,
                options.require_coverage,
            ),
        }
    }

    /// Runs one seed with its timeline collected.
    fn run_seed_traced(
        seed: u64,
        selection: Selection,
        design: Design,
        shape: &Shape,
    ) -> (SeedResult, Timeline) {
        let owned = shape.clone();
        let timeline = Timeline::default();
        let picked = Arc::new(OnceLock::new());
        let told = picked.clone();
        let outcome = evsource_sims::on_fresh_thread_traced(seed, timeline.clone(), move || {
            simulate(selection, design, owned, told)
        });
        (settle(outcome, &picked, selection), timeline)
    }

    /// Station names, session ids and account streams named in a violation: what its
    /// timeline is filtered by.
    fn subjects(detail: &str) -> Vec<String> {
        detail
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| {
                let digits =
                    |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
                word.strip_prefix("CP").is_some_and(digits)
                    || word.strip_prefix("account-").is_some_and(digits)
                    || word
                        .strip_prefix('c')
                        .and_then(|rest| rest.split_once('n'))
                        .is_some_and(|(a, b)| digits(a) && digits(b))
            })
            .map(str::to_owned)
            .fold(Vec::new(), |mut words, word| {
                if !words.contains(&word) {
                    words.push(word);
                }
                words
            })
    }

    fn run_one(
        seed: u64,
        selection: Selection,
        design: Design,
        shape: &Shape,
        trace: Option<&str>,
    ) -> ExitCode {
        let wall = Instant::now();
        let (result, timeline) = run_seed_traced(seed, selection, design, shape);
        println!(
            "seed {seed} · scenario {} · design {}",
            result.scenario.name(),
            design.name()
        );
        println!("topology: {}", result.topology);
        match result.scenario {
            Scenario::UnlockRace | Scenario::RollingUpgrade | Scenario::StoreFuzz => {
                println!("faults: {}", result.plan)
            }
            Scenario::Withdraw
            | Scenario::DoubleSubmit
            | Scenario::Seats
            | Scenario::ProjectionCatchup
            | Scenario::PanicCanary => println!(
                "faults: F6/F7 slow-disk {} · F8 concurrent clients (crashes, reboots and partitions do not apply to this scenario)",
                result
                    .plan
                    .sync_latency_millis
                    .map_or("off".to_owned(), |ms| format!("{ms} ms/sync"))
            ),
        }
        println!(
            "injected: {} csms crashes, {} csms stalls, {} outcome stalls, {} store crashes, {} station reboots, {} connector faults, {} station partitions, {} node–store partitions, {} frames lost, {} duplicated, {} delayed, {} failed-sync windows, {} read flips, {} impostors refused, {} self-stops · simulated {:.1} s in {:.2} s wall · {} timeline events",
            result.faults.csms_crashes,
            result.faults.node_pauses,
            result.faults.outcome_stalls,
            result.faults.store_crashes,
            result.faults.station_reboots,
            result.faults.connector_faults,
            result.faults.partitions,
            result.faults.store_partitions,
            result.faults.frames_lost,
            result.faults.frames_duplicated,
            result.faults.frames_delayed,
            result.faults.failed_syncs,
            result.faults.read_flips,
            result.faults.impostors_refused,
            result.faults.node_failures,
            result.simulated.as_secs_f64(),
            wall.elapsed().as_secs_f64(),
            timeline.entries().len()
        );
        if let Some(path) = trace {
            match std::fs::write(path, timeline.chrome_trace()) {
                Ok(()) => println!(
                    "trace: {path} (Chrome Trace Event JSON; open it in Perfetto or chrome://tracing)"
                ),
                Err(error) => {
                    eprintln!("error: cannot write the trace to {path}: {error}");
                    return ExitCode::from(2);
                }
            }
        }
        match result.verdict {
            Ok(summary) => {
                println!("ok: {summary}");
                ExitCode::SUCCESS
            }
            Err(violation) => {
                println!("FAILED: {violation}");
                let words = subjects(&violation.detail);
                let explaining = timeline.explaining(&words);
                let shown = explaining.len().min(80);
                println!(
                    "timeline of {} and every fault (simulated time · node · event), last {shown} of {}:",
                    words.join(", "),
                    explaining.len()
                );
                for entry in &explaining[explaining.len() - shown..] {
                    println!(
                        "  {:>10.3} s  {:<12} {}",
                        entry.at.as_secs_f64(),
                        entry.node,
                        entry.message
                    );
                }
                println!("{}", repro(seed, Some(result.scenario), design, shape));
                ExitCode::FAILURE
            }
        }
    }

    /// The run that `check_determinism` repeats: madsim's checker takes a plain `fn`, so
    /// the scenario selection, design and shape travel through here (set once, before).
    static CHECKED: Mutex<Option<(Selection, Design, Shape)>> = Mutex::new(None);

    /// Runs the seed twice with madsim's checker, which records every random draw of the
    /// first run and compares the second against it, draw by draw (I9).
    fn check_determinism(
        seed: u64,
        selection: Selection,
        design: Design,
        shape: &Shape,
    ) -> ExitCode {
        *CHECKED.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((selection, design, shape.clone()));
        println!("seed {seed} · running twice, comparing every random draw");
        let checked = std::panic::catch_unwind(|| {
            madsim::runtime::Runtime::check_determinism(seed, madsim::Config::default(), || async {
                let (selection, design, shape) = CHECKED
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .expect("set before the check");
                simulate(selection, design, shape, Arc::default())
                    .await
                    .scenario
                    .name()
            })
        });
        if let Err(payload) = checked {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the second run diverged".to_owned());
            println!("NOT deterministic (random draws): {message}");
            println!("{}", repro(seed, None, design, shape));
            return ExitCode::FAILURE;
        }
        // madsim compares the generator's state draw by draw; a leak that only re-routes
        // draws passes that check, so also compare what two fresh runs produced.
        let first = run_seed(seed, selection, design, shape);
        let second = run_seed(seed, selection, design, shape);
        let observed = |r: &SeedResult| {
            (
                r.verdict.as_ref().map_err(ToString::to_string).cloned(),
                r.faults,
                r.simulated,
                r.fingerprint,
            )
        };
        if observed(&first) == observed(&second) {
            println!(
                "deterministic: scenario {}, same random draws, same verdict, same history (fingerprint {:032x})",
                first.scenario.name(),
                first.fingerprint
            );
            ExitCode::SUCCESS
        } else {
            println!(
                "NOT deterministic (outcome):\n  first:  {:?}\n  second: {:?}",
                observed(&first),
                observed(&second)
            );
            println!("{}", repro(seed, Some(first.scenario), design, shape));
            ExitCode::FAILURE
        }
    }

    /// Searches for the smallest shape in which `seed` still breaks the same invariant:
    /// greedily switches fault kinds off, halves the fault phase and the workload, and keeps
    /// every step after which the run still fails. Each trial is one deterministic run.
    fn shrink(seed: u64, selection: Selection, design: Design) -> ExitCode {
        const TRIALS_MAX: u32 = 200;
        let (first, timeline) = run_seed_traced(seed, selection, design, &Shape::default());
        let Err(violation) = &first.verdict else {
            println!(
                "seed {seed} passes ({}): nothing to shrink",
                first.scenario.name()
            );
            return ExitCode::from(2);
        };
        let invariant = violation.invariant;
        let scenario = first.scenario;
        let selection = Selection::One(scenario);
        println!(
            "seed {seed} · scenario {} · fails {invariant} · trace {} events",
            scenario.name(),
            timeline.entries().len()
        );
        println!("faults: {}", first.plan);
        let race = UnlockRace::default();
        let mut best = Shape::default();
        let mut best_events = timeline.entries().len();
        let mut trials = 0u32;
        loop {
            let mut candidates: Vec<(String, Shape)> = Vec::new();
            for kind in FaultPlan::KINDS {
                if first.plan.has(kind) && !best.without.contains(kind) {
                    let mut next = best.clone();
                    next.without.insert(kind);
                    candidates.push((format!("without {kind}"), next));
                }
            }
            let phase = best
                .fault_phase_secs
                .unwrap_or(first.plan.fault_phase.as_secs());
            if phase > 5 && first.plan.any() {
                let mut next = best.clone();
                next.fault_phase_secs = Some((phase / 2).max(5));
                candidates.push((format!("fault phase → {} s", (phase / 2).max(5)), next));
            }
            if matches!(scenario, Scenario::UnlockRace | Scenario::RollingUpgrade) {
                let halve = |n: u64| (n > 1).then_some(n / 2);
                if let Some(n) = halve(best.clients.unwrap_or(race.clients)) {
                    let mut next = best.clone();
                    next.clients = Some(n);
                    candidates.push((format!("clients → {n}"), next));
                }
                if let Some(n) = halve(best.requests.unwrap_or(race.requests_per_client)) {
                    let mut next = best.clone();
                    next.requests = Some(n);
                    candidates.push((format!("requests per client → {n}"), next));
                }
                if let Some(n) = halve(best.stations.unwrap_or(race.stations) as u64) {
                    let mut next = best.clone();
                    next.stations = Some(n as usize);
                    candidates.push((format!("stations → {n}"), next));
                }
            }
            let mut improved = false;
            for (step, candidate) in candidates {
                if trials >= TRIALS_MAX {
                    break;
                }
                trials += 1;
                let (result, timeline) = run_seed_traced(seed, selection, design, &candidate);
                let still = matches!(&result.verdict, Err(v) if v.invariant == invariant);
                println!(
                    "  try {step:<28} {}",
                    if still {
                        "still fails: kept"
                    } else {
                        "passes: undone"
                    }
                );
                if still {
                    best = candidate;
                    best_events = timeline.entries().len();
                    improved = true;
                    break;
                }
            }
            if !improved || trials >= TRIALS_MAX {
                break;
            }
        }
        println!(
            "smallest after {trials} trials: fails {invariant} with a trace of {best_events} events (from {})",
            timeline.entries().len()
        );
        println!("{}", repro(seed, Some(scenario), design, &best));
        ExitCode::FAILURE
    }

    #[derive(Default)]
    struct Tally {
        done: u64,
        simulated: Duration,
        faults: FaultCounts,
        by_scenario: BTreeMap<&'static str, u64>,
        /// What the history checks covered and cost, over every seed.
        checked: HistoryStats,
        /// Per situation: the seeds that reached it, and how often in all.
        coverage: BTreeMap<&'static str, (u64, u64)>,
        /// Per invariant: the seeds that broke it, their scenario and what was seen.
        failures: BTreeMap<&'static str, Vec<(u64, Scenario, String)>>,
        /// When a progress line was last written (logs that are not a terminal).
        last_progress: Option<Instant>,
    }

    fn swarm(
        first: u64,
        seeds: u64,
        jobs: usize,
        selection: Selection,
        design: Design,
        shape: &Shape,
        require_coverage: bool,
    ) -> ExitCode {
        let scenario_name = match selection {
            Selection::One(scenario) => scenario.name(),
            Selection::All => "all",
        };
        println!(
            "swarm: seeds {first}..{} · scenario {scenario_name} · design {} · {jobs} jobs{}",
            first + seeds,
            design.name(),
            shape.flags()
        );
        match selection {
            Selection::One(scenario @ (Scenario::UnlockRace | Scenario::RollingUpgrade)) => {
                let mut race = UnlockRace {
                    upgrade: scenario == Scenario::RollingUpgrade,
                    ..UnlockRace::default()
                };
                shape.apply_to_race(&mut race);
                println!("topology of each seed: {}", race.topology());
            }
            _ => println!("topology: each seed's own (`sim run --seed S` prints it)"),
        }
        let next = Arc::new(AtomicU64::new(first));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let wall = Instant::now();
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                let (next, tally, shape) = (next.clone(), tally.clone(), shape.clone());
                std::thread::spawn(move || {
                    loop {
                        let seed = next.fetch_add(1, Ordering::SeqCst);
                        if seed >= first + seeds {
                            return;
                        }
                        let result = run_seed(seed, selection, design, &shape);
                        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                        tally.done += 1;
                        tally.simulated += result.simulated;
                        tally.faults.add(&result.faults);
                        tally.checked.add(&result.checked);
                        for (situation, count) in &result.coverage {
                            let entry = tally.coverage.entry(situation).or_default();
                            entry.0 += 1;
                            entry.1 += count;
                        }
                        *tally.by_scenario.entry(result.scenario.name()).or_default() += 1;
                        if let Err(violation) = &result.verdict {
                            tally
                                .failures
                                .entry(violation.invariant)
                                .or_default()
                                .push((seed, result.scenario, violation.detail.clone()));
                        }
                        let failed = tally.failures.values().map(Vec::len).sum::<usize>();
                        let due = progress(tally.done, seeds, failed, wall, tally.last_progress);
                        if due {
                            tally.last_progress = Some(Instant::now());
                        }
                    }
                })
            })
            .collect();
        // A worker dies only if the harness itself is broken: never a green run then.
        let dead_workers = workers
            .into_iter()
            .map(std::thread::JoinHandle::join)
            .filter(Result::is_err)
            .count();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = wall.elapsed().as_secs_f64().max(1e-9);
        let failed: usize = tally.failures.values().map(Vec::len).sum();
        println!("| measure | value |");
        println!("| --- | --- |");
        println!("| seeds run | {} |", tally.done);
        for (scenario, count) in &tally.by_scenario {
            println!("| … of {scenario} | {count} |");
        }
        println!("| seeds/s | {:.1} |", tally.done as f64 / elapsed);
        println!(
            "| simulated per seed (mean) | {:.0} s |",
            tally.simulated.as_secs_f64() / tally.done.max(1) as f64
        );
        println!(
            "| simulated : wall | {:.0} × |",
            tally.simulated.as_secs_f64() / elapsed
        );
        println!("| F1 csms crashes | {} |", tally.faults.csms_crashes);
        println!("| F1 csms stalls | {} |", tally.faults.node_pauses);
        println!(
            "| F1 outcome stalls (until the lease moved) | {} |",
            tally.faults.outcome_stalls
        );
        println!("| F1 store crashes | {} |", tally.faults.store_crashes);
        println!("| F2 station reboots | {} |", tally.faults.station_reboots);
        println!(
            "| F2 connector faults | {} |",
            tally.faults.connector_faults
        );
        println!("| F3 station partitions | {} |", tally.faults.partitions);
        println!(
            "| F3 node–store partitions | {} |",
            tally.faults.store_partitions
        );
        println!("| F4 frames lost | {} |", tally.faults.frames_lost);
        println!(
            "| F4 frames duplicated | {} |",
            tally.faults.frames_duplicated
        );
        println!("| F4 frames delayed | {} |", tally.faults.frames_delayed);
        println!("| F6 failed-sync windows | {} |", tally.faults.failed_syncs);
        println!("| F6 read flips | {} |", tally.faults.read_flips);
        println!(
            "| F10 segments damaged at rest | {} |",
            tally.faults.damage_at_rest
        );
        println!("| F9 status bursts | {} |", tally.faults.status_bursts);
        println!(
            "| F11 impostor handshakes refused | {} |",
            tally.faults.impostors_refused
        );
        println!(
            "| node self-stops (restarted) | {} |",
            tally.faults.node_failures
        );
        let checked = &tally.checked;
        println!(
            "| I11 store operations checked | {} ({} acknowledged appends, {} refused, {} reads; {} events compared) |",
            checked.operations,
            checked.appends_acknowledged,
            checked.appends_refused,
            checked.reads_checked,
            checked.events_compared
        );
        println!(
            "| I11 outcomes unknown (settled) | {} ({}) |",
            checked.outcomes_unknown, checked.unknowns_settled
        );
        println!(
            "| I11 check time | {:.2} s ({:.1} % of wall; {:.2} µs per operation) |",
            checked.checked_in.as_secs_f64(),
            100.0 * checked.checked_in.as_secs_f64() / elapsed,
            checked.checked_in.as_secs_f64() * 1e6 / checked.operations.max(1) as f64
        );
        if checked.unrecorded > 0 {
            println!(
                "| I11 calls past the history bound (unchecked) | {} |",
                checked.unrecorded
            );
        }
        println!("| failed seeds | {failed} |");
        println!();
        println!("| coverage: dangerous situation | seeds | times |");
        println!("| --- | --- | --- |");
        let required = coverage::required();
        let mut unreached = Vec::new();
        for situation in &required {
            let (reached, times) = tally.coverage.get(situation).copied().unwrap_or_default();
            println!("| {situation} | {reached} | {times} |");
            if reached == 0 {
                unreached.push(*situation);
            }
        }
        for (situation, (reached, times)) in &tally.coverage {
            if !required.contains(situation) {
                println!("| {situation} | {reached} | {times} |");
            }
        }
        println!();
        for (invariant, failing) in &tally.failures {
            println!("| {invariant} violated | {} |", failing.len());
        }
        for (invariant, failing) in &tally.failures {
            let mut failing: Vec<_> = failing.iter().collect();
            failing.sort_by_key(|(seed, _, _)| *seed);
            for (seed, scenario, detail) in failing {
                println!(
                    "failed: seed {seed} · {} · {invariant}: {}",
                    scenario.name(),
                    abbreviated(detail, 400)
                );
                println!("{}", repro(*seed, Some(*scenario), design, shape));
            }
        }
        if dead_workers > 0 || tally.done != seeds {
            println!(
                "HARNESS FAILURE: {dead_workers} swarm worker(s) died; {} of {seeds} seeds were judged",
                tally.done
            );
            return ExitCode::FAILURE;
        }
        if require_coverage && !unreached.is_empty() {
            println!(
                "COVERAGE FAILURE: never reached in {seeds} seeds: {}",
                unreached.join("; ")
            );
            return ExitCode::FAILURE;
        }
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// `text` cut to about `max` bytes, on a character boundary.
    fn abbreviated(text: &str, max: usize) -> String {
        if text.len() <= max {
            return text.to_owned();
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} …", &text[..end])
    }

    /// Shows how far a swarm got: a bar on a terminal; in a log, a line at every tenth of
    /// the seeds and at least every 30 s. Returns whether it wrote a log line.
    fn progress(
        done: u64,
        total: u64,
        failed: usize,
        started: Instant,
        last_line: Option<Instant>,
    ) -> bool {
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let left = (total.saturating_sub(done)) as f64 / rate.max(1e-9);
        let mut stderr = std::io::stderr();
        if stderr.is_terminal() {
            let width = 40;
            let filled = (done * width / total.max(1)) as usize;
            let _ = write!(
                stderr,
                "\r[{}{}] {done}/{total} · {failed} failed · {rate:.1} seeds/s · ~{left:.0} s left ",
                "#".repeat(filled),
                " ".repeat(width as usize - filled)
            );
            let _ = stderr.flush();
            return false;
        }
        let step = (total / 10).max(1);
        let quiet_for = last_line.unwrap_or(started).elapsed();
        if total < 20 || (!done.is_multiple_of(step) && quiet_for < Duration::from_secs(30)) {
            return false;
        }
        eprintln!(
            "progress: {done}/{total} seeds · {failed} failed · {rate:.1} seeds/s · ~{left:.0} s left"
        );
        true
    }
}
