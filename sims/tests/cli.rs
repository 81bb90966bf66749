//! The `evsource-sim` command line, run as users run it: a failing seed found by a swarm
//! shrinks to a smaller run that still breaks the same invariant, and its repro line does
//! reproduce it; bad arguments are refused with the usage.
#![cfg(madsim)]

use std::process::Command;

fn sim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_evsource-sim"))
        .args(args)
        .output()
        .expect("the simulator runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The arguments of a `repro: cargo xtask sim run …` line.
fn repro_args(line: &str) -> Vec<String> {
    line.trim()
        .strip_prefix("repro: cargo xtask sim ")
        .expect("a repro line")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn trace_events(output: &str) -> usize {
    output
        .lines()
        .find_map(|line| {
            let before = line.split(" timeline events").next()?;
            line.contains(" timeline events")
                .then(|| before.rsplit(' ').next()?.parse().ok())?
        })
        .expect("the run reports its timeline length")
}

/// Every seed the swarm reports fails again when replayed from its repro line, and
/// shrinking narrows at least one of them to a smaller run — a shorter trace, fewer
/// faults or a smaller workload — that still breaks the same invariant. (Some seeds fail
/// only in their full shape: shrink then prints the seed's own line, and says so.)
#[test]
fn a_failing_seed_shrinks_to_a_smaller_run_that_still_fails() {
    let (passed, swarm) = sim(&[
        "swarm",
        "--seeds",
        "20",
        "--design",
        "naive-side-effect",
        "--jobs",
        "2",
    ]);
    assert!(!passed, "the swarm finds N1's unrecorded unlocks:\n{swarm}");
    let failing: Vec<Vec<String>> = swarm
        .lines()
        .filter(|l| l.starts_with("repro: "))
        .map(repro_args)
        .collect();
    assert!(!failing.is_empty(), "repro lines:\n{swarm}");
    let mut shrunk_one = false;
    for args in &failing {
        let seed = args[args.iter().position(|a| a == "--seed").unwrap() + 1].clone();
        let (_, original) = sim(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let violated = original
            .lines()
            .find_map(|l| l.strip_prefix("FAILED: "))
            .and_then(|l| l.split(" violated").next())
            .unwrap_or_else(|| panic!("the repro line fails again:\n{original}"))
            .to_owned();

        let (shrink_passed, shrunk) =
            sim(&["shrink", "--seed", &seed, "--design", "naive-side-effect"]);
        assert!(
            !shrink_passed,
            "shrink exits non-zero: the seed still fails"
        );
        let smallest = shrunk
            .lines()
            .rfind(|l| l.starts_with("repro: "))
            .expect("shrink prints the smallest repro line");
        let smaller = repro_args(smallest);
        if smaller.len() <= args.len() {
            continue; // this seed fails only in its own shape
        }
        let (_, replayed) = sim(&smaller.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            replayed.contains(&format!("FAILED: {violated} violated")),
            "the shrunk repro line reproduces {violated}:\n{replayed}"
        );
        assert!(
            trace_events(&replayed) < trace_events(&original),
            "a shorter trace: {} vs {}",
            trace_events(&replayed),
            trace_events(&original)
        );
        shrunk_one = true;
        break;
    }
    assert!(
        shrunk_one,
        "shrink narrowed none of the failing seeds: {failing:?}"
    );
}

#[test]
fn bad_arguments_are_refused_with_the_usage() {
    for args in [
        &["run", "--seed", "1", "--without", "F8"][..],
        &["run", "--seed", "x"],
        &["run", "--seed", "1", "--clients", "0"],
        &["swarm", "--clients", "x"],
        &["run", "--seed", "1", "--scenario", "nope"],
    ] {
        let (passed, output) = sim(args);
        assert!(!passed, "{args:?} is refused");
        assert!(
            output.contains("error: ") && output.contains("usage:"),
            "{args:?} explains itself:\n{output}"
        );
    }
}

/// I14: a seed that panics fails the swarm — whether the panic unwinds from the scenario,
/// from a task on another simulated machine, or is caught and swallowed inside the code —
/// and the swarm still judges every other seed, naming each panic and its repro line.
#[test]
fn a_panicking_seed_fails_the_swarm_and_the_others_still_run() {
    let (passed, swarm) = sim(&[
        "swarm",
        "--seeds",
        "9",
        "--scenario",
        "panic-canary",
        "--jobs",
        "2",
    ]);
    assert!(
        !passed,
        "a swarm of panicking seeds must not pass:\n{swarm}"
    );
    assert!(
        swarm.contains("| seeds run | 9 |"),
        "every seed judged:\n{swarm}"
    );
    assert!(swarm.contains("| I14 violated | 9 |"), "{swarm}");
    for site in [
        "a stored withdrawal exceeds the balance",
        "events arrived out of position order",
        "(deliberate, caught)",
    ] {
        assert!(
            swarm.contains(site),
            "the panic '{site}' is reported:\n{swarm}"
        );
    }
    let repro = swarm
        .lines()
        .find(|l| l.starts_with("repro: "))
        .expect("a repro line");
    let args = repro_args(repro);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (replayed, run) = sim(&args);
    assert!(!replayed, "the repro line fails again:\n{run}");
    assert!(run.contains("FAILED: I14 violated"), "{run}");
}

/// `--require-coverage` fails a swarm that never reached a required dangerous situation,
/// and says which: a few seeds of one in-process scenario cannot crash a store server.
#[test]
fn a_swarm_that_never_reaches_a_dangerous_situation_fails_its_coverage() {
    let (passed, swarm) = sim(&[
        "swarm",
        "--seeds",
        "2",
        "--scenario",
        "withdraw",
        "--require-coverage",
    ]);
    assert!(!passed, "a swarm short of coverage must fail:\n{swarm}");
    assert!(
        swarm.contains("| failed seeds | 0 |"),
        "no seed failed:\n{swarm}"
    );
    assert!(
        swarm.contains("COVERAGE FAILURE") && swarm.contains("a torn tail cut at recovery"),
        "the unreached situations are named:\n{swarm}"
    );
}
