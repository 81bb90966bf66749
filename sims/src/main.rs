//! `evsource-sim`: run one seed or a swarm of seeds of a simulation scenario.
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
    use std::io::Write;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use evsource_sims::faults::{Design, FaultCounts, FaultPlan};
    use evsource_sims::unlock_race::{RunReport, UnlockRace, run};

    const USAGE: &str = "usage:
  evsource-sim                                  default swarm: 200 seeds of all scenarios
  evsource-sim swarm --seeds N [--first S] [--scenario X] [--design D] [--jobs J]
  evsource-sim run --seed S [--scenario X] [--design D]

scenarios: unlock-race, all (today: unlock-race)
designs:   correct (default), naive-early-checkpoint (N4); N1-N3, N5, N6 are not built yet";

    #[derive(Debug)]
    struct Options {
        command: Command,
        scenario: String,
        design: Design,
        jobs: usize,
    }

    #[derive(Debug)]
    enum Command {
        Run { seed: u64 },
        Swarm { first: u64, seeds: u64 },
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let (command, rest) = match args.first().map(String::as_str) {
            None => ("swarm", &args[..0]),
            Some("run") => ("run", &args[1..]),
            Some("swarm") => ("swarm", &args[1..]),
            Some(other) => return Err(format!("unknown command '{other}'")),
        };
        let mut values: BTreeMap<&str, &str> = BTreeMap::new();
        let mut index = 0;
        while index < rest.len() {
            let flag = rest[index].as_str();
            let known = [
                "--seed",
                "--seeds",
                "--first",
                "--scenario",
                "--design",
                "--jobs",
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
        let scenario = values
            .get("--scenario")
            .copied()
            .unwrap_or("all")
            .to_owned();
        if !["all", "unlock-race"].contains(&scenario.as_str()) {
            return Err(format!(
                "unknown scenario '{scenario}'; known: unlock-race, all"
            ));
        }
        let design_name = values.get("--design").copied().unwrap_or("correct");
        let design = Design::parse(design_name).ok_or_else(|| {
            let known: Vec<&str> = Design::ALL.iter().map(|d| d.name()).collect();
            format!(
                "unknown design '{design_name}'; known: {}",
                known.join(", ")
            )
        })?;
        let default_jobs = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let jobs = number("--jobs", Some(default_jobs))?.max(1) as usize;
        let command = if command == "run" {
            Command::Run {
                seed: number("--seed", None)?,
            }
        } else {
            Command::Swarm {
                first: number("--first", Some(1))?,
                seeds: number("--seeds", Some(200))?,
            }
        };
        Ok(Options {
            command,
            scenario,
            design,
            jobs,
        })
    }

    /// Runs one seed on a fresh OS thread: thread-local generators (tokio's, the rand
    /// crate's) must not carry over from a previous seed.
    fn run_seed(seed: u64, design: Design) -> (FaultPlan, RunReport) {
        std::thread::spawn(move || {
            let runtime =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.block_on(async {
                let plan = FaultPlan::draw();
                let scenario = UnlockRace {
                    faults: plan.clone(),
                    design,
                    ..UnlockRace::default()
                };
                let report = run(&scenario).await;
                (plan, report)
            })
        })
        .join()
        .unwrap_or_else(|_| panic!("seed {seed} panicked; {}", repro(seed, design)))
    }

    fn repro(seed: u64, design: Design) -> String {
        match design {
            Design::Correct => format!("repro: cargo xtask sim run --seed {seed}"),
            other => format!(
                "repro: cargo xtask sim run --seed {seed} --design {}",
                other.name()
            ),
        }
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
            Command::Run { seed } => run_one(seed, options.design),
            Command::Swarm { first, seeds } => swarm(
                first,
                seeds,
                options.jobs,
                &options.scenario,
                options.design,
            ),
        }
    }

    fn run_one(seed: u64, design: Design) -> ExitCode {
        println!(
            "seed {seed} · scenario unlock-race · design {}",
            design.name()
        );
        let wall = Instant::now();
        let (plan, report) = run_seed(seed, design);
        println!("faults: {plan}");
        println!(
            "injected: {} csms crashes, {} station reboots, {} partitions · simulated {:.1} s in {:.2} s wall",
            report.faults.csms_crashes,
            report.faults.station_reboots,
            report.faults.partitions,
            report.simulated.as_secs_f64(),
            wall.elapsed().as_secs_f64()
        );
        match report.verdict {
            Ok(summary) => {
                println!(
                    "ok: {} requests, {} accepted, {} rejected, {} timed out, {} physical unlocks",
                    summary.requests,
                    summary.accepted,
                    summary.rejected,
                    summary.timed_out,
                    summary.actuations
                );
                ExitCode::SUCCESS
            }
            Err(violation) => {
                println!("FAILED: {violation}");
                println!("{}", repro(seed, design));
                ExitCode::FAILURE
            }
        }
    }

    #[derive(Default)]
    struct Tally {
        done: u64,
        simulated: Duration,
        faults: FaultCounts,
        failures: BTreeMap<&'static str, Vec<u64>>,
    }

    fn swarm(first: u64, seeds: u64, jobs: usize, scenario: &str, design: Design) -> ExitCode {
        println!(
            "swarm: seeds {first}..{} · scenario {scenario} · design {} · {jobs} jobs",
            first + seeds,
            design.name()
        );
        let next = Arc::new(AtomicU64::new(first));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let wall = Instant::now();
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                let (next, tally) = (next.clone(), tally.clone());
                std::thread::spawn(move || {
                    loop {
                        let seed = next.fetch_add(1, Ordering::SeqCst);
                        if seed >= first + seeds {
                            return;
                        }
                        let (_, report) = run_seed(seed, design);
                        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                        tally.done += 1;
                        tally.simulated += report.simulated;
                        tally.faults.add(&report.faults);
                        if let Err(violation) = &report.verdict {
                            tally
                                .failures
                                .entry(violation.invariant)
                                .or_default()
                                .push(seed);
                        }
                        progress(tally.done, seeds);
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
        let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = wall.elapsed().as_secs_f64().max(1e-9);
        let failed: usize = tally.failures.values().map(Vec::len).sum();
        println!("| measure | value |");
        println!("| --- | --- |");
        println!("| seeds run | {} |", tally.done);
        println!("| seeds/s | {:.1} |", tally.done as f64 / elapsed);
        println!(
            "| simulated : wall | {:.0} × |",
            tally.simulated.as_secs_f64() / elapsed
        );
        println!("| F1 csms crashes | {} |", tally.faults.csms_crashes);
        println!("| F2 station reboots | {} |", tally.faults.station_reboots);
        println!("| F3 partitions | {} |", tally.faults.partitions);
        println!("| failed seeds | {failed} |");
        for (invariant, failing) in &tally.failures {
            println!("| {invariant} violated | {} |", failing.len());
        }
        for failing in tally.failures.values() {
            for seed in failing {
                println!("{}", repro(*seed, design));
            }
        }
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn progress(done: u64, total: u64) {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return;
        }
        let width = 40;
        let filled = (done * width / total.max(1)) as usize;
        let mut stderr = std::io::stderr();
        let _ = write!(
            stderr,
            "\r[{}{}] {done}/{total}",
            "#".repeat(filled),
            " ".repeat(width as usize - filled)
        );
        let _ = stderr.flush();
    }
}
