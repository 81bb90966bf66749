//! One stable command per workflow: `cargo xtask <command>`.
//!
//! * `test` — everything CI runs: fmt check, clippy (warnings denied), every test, and the
//!   simulation scenarios under madsim in their own target directory.
//! * `sim`  — the seeded simulation swarm, one seed (`sim run --seed S`), or the
//!   smallest failing shape of a seed (`sim shrink --seed S`).
//! * `models` — the stateright models: `models check append …`, `models explore append`.
//! * `bench` — the criterion benchmarks (`--quick`: smaller streams, shorter sampling),
//!   then the durable-throughput chart from their results.

use std::path::Path;
use std::process::{Command, ExitCode};

mod chart;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    fmt check, clippy with warnings denied, unit/property/integration tests,
          and the madsim simulation scenarios
  sim     the seeded simulation swarm (release build with --cfg madsim in target/sim):
            cargo xtask sim                       default swarm, 200 seeds
            cargo xtask sim swarm --seeds N [--first S] [--scenario X] [--jobs J]
            cargo xtask sim run --seed S          one seed, reproducibly
            cargo xtask sim shrink --seed S       the smallest run in which it still fails
  models  the stateright models (release build):
            cargo xtask models check append [--handlers K] [--commands M] [--crashes C] [--design D]
            cargo xtask models explore append     stateright's Explorer on 127.0.0.1:3000
  bench   the criterion benchmarks (append, rehydrate, snapshot, read_all, command):
            cargo xtask bench [--quick] [FILTER]  --quick: 100k-event streams, 1 s warm-up, 3 s samples
          the PostgreSQL peer uses EVSOURCE_POSTGRES_URL (default: the local server; empty: skip);
          afterwards benches/durable-throughput.svg is redrawn from the results
            cargo xtask bench --chart             only redraw the chart from the last results";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") if args.len() == 1 => {
            match ensure_interop_python().and_then(|()| ocpp_schemas()) {
                Ok(schemas) => run_all(&test_steps(), &[(SCHEMAS_VAR, schemas)]),
                Err(error) => {
                    eprintln!("==> OCPP interop environment: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("sim") => simulate(&args[1..]),
        Some("models") => check_models(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// One external command of a workflow.
struct Step {
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    /// Extra environment, e.g. the simulator's cfg and its own target directory.
    env: &'static [(&'static str, &'static str)],
}

/// Simulation builds set `--cfg madsim` for the whole build, so they live in their own
/// target directory and never evict the normal build.
const SIMULATION_ENV: &[(&str, &str)] = &[
    ("RUSTFLAGS", "--cfg madsim"),
    ("CARGO_TARGET_DIR", "target/sim"),
];

fn test_steps() -> Vec<Step> {
    vec![
        Step {
            name: "format",
            program: "cargo",
            args: &["fmt", "--all", "--check"],
            env: &[],
        },
        Step {
            name: "clippy",
            program: "cargo",
            args: &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
        },
        Step {
            name: "tests",
            program: "cargo",
            args: &["test", "--workspace", "--all-targets", "--locked"],
            env: &[(INTEROP_PYTHON_VAR, INTEROP_PYTHON)],
        },
        Step {
            name: "doc tests",
            program: "cargo",
            args: &["test", "--workspace", "--doc", "--locked"],
            env: &[],
        },
        // Release, like the swarm after it: the two share one build, and the simulation
        // tests (whole swarms of multi-node runs) take minutes in a debug build.
        Step {
            name: "simulation (madsim, release)",
            program: "cargo",
            args: &[
                "test",
                "--release",
                "--package",
                "evsource-sims",
                "--locked",
            ],
            env: SIMULATION_ENV,
        },
        Step {
            name: "simulation swarm (200 seeds, every dangerous situation reached, release)",
            program: "cargo",
            args: &[
                "run",
                "--quiet",
                "--release",
                "--locked",
                "--package",
                "evsource-sims",
                "--bin",
                "evsource-sim",
                "--",
                "swarm",
                "--seeds",
                "200",
                "--require-coverage",
            ],
            env: SIMULATION_ENV,
        },
        Step {
            name: "simulation lints (madsim)",
            program: "cargo",
            args: &[
                "clippy",
                "--package",
                "evsource-sims",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            env: SIMULATION_ENV,
        },
    ]
}

/// The Python environment of the interop test: the PyPI `ocpp` package (an independent
/// OCPP 1.6-J implementation, whose schemas also check the CSMS's frames).
const INTEROP_VENV: &str = "target/ocpp-venv";
const INTEROP_PYTHON: &str = "target/ocpp-venv/bin/python";
const INTEROP_PYTHON_VAR: &str = "EVSOURCE_PYTHON";
const INTEROP_REQUIREMENTS: &str = "tests/interop/requirements.txt";

/// Creates (or refreshes, when the requirements changed) the interop test's virtualenv.
fn ensure_interop_python() -> Result<(), String> {
    let requirements = std::fs::read_to_string(INTEROP_REQUIREMENTS)
        .map_err(|e| format!("cannot read {INTEROP_REQUIREMENTS}: {e}"))?;
    let marker = Path::new(INTEROP_VENV).join("installed-requirements.txt");
    if Path::new(INTEROP_PYTHON).exists()
        && std::fs::read_to_string(&marker).is_ok_and(|installed| installed == requirements)
    {
        return Ok(());
    }
    eprintln!(
        "==> OCPP interop environment: python3 -m venv {INTEROP_VENV}; pip install -r {INTEROP_REQUIREMENTS}"
    );
    let run = |program: &str, args: &[&str]| -> Result<(), String> {
        match Command::new(program).args(args).status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("{program} {} failed ({status})", args.join(" "))),
            Err(error) => Err(format!(
                "cannot start {program}: {error} (Python 3 with venv and pip is needed)"
            )),
        }
    };
    run("python3", &["-m", "venv", "--clear", INTEROP_VENV])?;
    run(
        INTEROP_PYTHON,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            INTEROP_REQUIREMENTS,
        ],
    )?;
    std::fs::write(&marker, requirements)
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))
}

/// Where the tests find the official OCPP 1.6 schemas: those the `ocpp` package installed.
const SCHEMAS_VAR: &str = "EVSOURCE_OCPP_SCHEMAS";

/// The `ocpp/v16/schemas` directory inside the interop virtualenv, as an absolute path.
fn ocpp_schemas() -> Result<String, String> {
    let lib = Path::new(INTEROP_VENV).join("lib");
    let entries =
        std::fs::read_dir(&lib).map_err(|e| format!("cannot list {}: {e}", lib.display()))?;
    for entry in entries.flatten() {
        let dir = entry.path().join("site-packages/ocpp/v16/schemas");
        if dir.join("BootNotificationResponse.json").exists() {
            let absolute = std::fs::canonicalize(&dir).map_err(|e| e.to_string())?;
            return Ok(absolute.to_string_lossy().into_owned());
        }
    }
    Err(format!("no ocpp/v16/schemas under {}", lib.display()))
}

/// Builds the simulator in release with `--cfg madsim` and runs it with `args`. The
/// stations' wire oracle (I12) checks the CSMS's frames against the official OCPP 1.6
/// schemas of the interop environment; if that cannot be set up, against the typed
/// messages only, and the run says so.
fn simulate(args: &[String]) -> ExitCode {
    let mut env: Vec<(&str, String)> = SIMULATION_ENV
        .iter()
        .map(|(key, value)| (*key, (*value).to_owned()))
        .collect();
    match ensure_interop_python().and_then(|()| ocpp_schemas()) {
        Ok(schemas) => env.push((SCHEMAS_VAR, schemas)),
        Err(error) => eprintln!(
            "==> OCPP frames are checked against the typed messages only (no official schemas: {error})"
        ),
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_release("evsource-sims", "evsource-sim", args, &env)
}

/// Builds the model checker in release and runs it with `args`.
fn check_models(args: &[String]) -> ExitCode {
    run_release("evsource-models", "evsource-models", args, &[])
}

/// `cargo run --release` of `package`'s binary `bin` with `args`, under `env`.
fn run_release(package: &str, bin: &str, args: &[String], env: &[(&str, &str)]) -> ExitCode {
    let mut command = Command::new("cargo");
    command
        .args([
            "run",
            "--quiet",
            "--release",
            "--locked",
            "--package",
            package,
        ])
        .args(["--bin", bin, "--"])
        .args(args)
        .envs(env.iter().copied());
    exit_code_of(command)
}

/// Runs the criterion benches; `--quick` shrinks the large streams and the sampling.
fn bench(args: &[String]) -> ExitCode {
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--chart") {
        return draw_chart();
    }
    let filters: Vec<&String> = args.iter().filter(|a| *a != "--quick").collect();
    if let Some(flag) = filters.iter().find(|a| a.starts_with('-')) {
        eprintln!("unknown option '{flag}'\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut command = Command::new("cargo");
    command.args([
        "bench",
        "--locked",
        "--package",
        "evsource",
        "--benches",
        "--",
    ]);
    if quick {
        command
            .args(["--warm-up-time", "1", "--measurement-time", "3"])
            .env("EVSOURCE_BENCH_QUICK", "1");
    }
    command.args(filters);
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if url.is_empty() => {
            command.env_remove(POSTGRES_URL_VAR);
            eprintln!("PostgreSQL peer: off ({POSTGRES_URL_VAR} is empty)");
        }
        Ok(url) => eprintln!("PostgreSQL peer: {url}"),
        Err(_) => {
            command.env(POSTGRES_URL_VAR, POSTGRES_URL_DEFAULT);
            eprintln!(
                "PostgreSQL peer: {POSTGRES_URL_DEFAULT} (set {POSTGRES_URL_VAR} to another server, or empty to skip)"
            );
        }
    }
    match exit_code_of(command) {
        ExitCode::SUCCESS => draw_chart(),
        failed => failed,
    }
}

/// Redraws the durable-throughput chart from criterion's latest results.
fn draw_chart() -> ExitCode {
    match chart::durable_throughput_svg(Path::new("target/criterion")) {
        Some(svg) => match std::fs::write(CHART, svg) {
            Ok(()) => {
                eprintln!("chart: {CHART} (durable throughput vs appenders)");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("chart: could not write {CHART}: {error}");
                ExitCode::FAILURE
            }
        },
        None => {
            eprintln!("chart: no durable append results in target/criterion yet");
            ExitCode::FAILURE
        }
    }
}

/// The PostgreSQL server of the append benches' peer and of the PostgreSQL backend's tests,
/// unless told otherwise (the tests' default, in `tests/support`, is the same).
const POSTGRES_URL_VAR: &str = "EVSOURCE_POSTGRES_URL";
const POSTGRES_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Redrawn after every bench run from criterion's latest results.
const CHART: &str = "benches/durable-throughput.svg";

fn exit_code_of(mut command: Command) -> ExitCode {
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().map_or(1, |code| code.clamp(1, 255) as u8)),
        Err(error) => {
            eprintln!("could not start cargo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `steps` in order, each with its own environment plus `shared`; stops at the first
/// failure.
fn run_all(steps: &[Step], shared: &[(&str, String)]) -> ExitCode {
    for (name, value) in shared {
        eprintln!("==> {name}={value}");
    }
    for step in steps {
        let env: Vec<String> = step
            .env
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\" "))
            .collect();
        eprintln!(
            "==> {}: {}{} {}",
            step.name,
            env.concat(),
            step.program,
            step.args.join(" ")
        );
        let status = Command::new(step.program)
            .args(step.args)
            .envs(step.env.iter().copied())
            .envs(shared.iter().map(|(k, v)| (*k, v.as_str())))
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("==> {} failed ({status})", step.name);
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!(
                    "==> {} could not start {}: {error}",
                    step.name, step.program
                );
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("==> all steps passed");
    ExitCode::SUCCESS
}
