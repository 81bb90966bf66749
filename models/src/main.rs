//! `evsource-models`: check a model exhaustively, or browse its state space. Usually run
//! through `cargo xtask models`.

use std::process::ExitCode;

use evsource_models::append::{AppendDesign, AppendDomain, AppendModel};
use evsource_models::outbox::{OutboxDesign, OutboxModel};
use evsource_models::report::{self, Search};
use evsource_models::seats::{SeatsDesign, SeatsModel};
use stateright::Model;

const USAGE: &str = "usage:
  evsource-models check <model> [--handlers K] [--commands M] [--crashes C] [--design D] [--domain A] [--dfs | --symmetry] [--threads T]
  evsource-models explore <model> [same options] [--port P]   serves stateright's Explorer on 127.0.0.1

models:  append   K handlers × M commands on one stream: load → decide → append(Exact),
                  retry on conflict, crash at any step (defaults: 2 × 2, 1 crash)
                  --domain account (default): withdrawals from one account (I6)
                  --domain station: unlock requests on one station's two connectors (I1)
                  designs: correct (default), naive-read-model (N2), naive-version-check (N3)
                  --symmetry: depth first, handlers interchangeable (symmetry reduction)
         account  the same as `append --domain account`
         outbox   the dispatcher and a station over a network that loses, duplicates and
                  reorders; the dispatcher crashes and resumes from its checkpoint
                  [--requests R (1–2)] [--crashes C]
                  designs: correct (default), naive-early-checkpoint (N4), naive-side-effect (N1)
         seats    3 customers reserve overlapping seats, each in its own stream, with the
                  cross-stream append condition (seats 1–2, 2–3 and 4 of a 4-seat show)
                  designs: correct (default), naive-no-condition";

/// The model a command checks.
enum Which {
    Append(AppendModel),
    Outbox(OutboxModel),
    Seats(SeatsModel),
}

struct Options {
    explore: bool,
    /// Depth first with symmetry reduction (append only).
    symmetry: bool,
    model: Which,
    search: Search,
    threads: usize,
    port: u16,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let explore = match args.first().map(String::as_str) {
        Some("check") => false,
        Some("explore") => true,
        Some(other) => return Err(format!("unknown command '{other}'")),
        None => return Err("a command is required".into()),
    };
    let (outbox, seats) = match args.get(1).map(String::as_str) {
        Some("append" | "account") => (false, false),
        Some("outbox") => (true, false),
        Some("seats") => (false, true),
        Some(other) => {
            return Err(format!(
                "unknown model '{other}'; known: append, account, outbox, seats"
            ));
        }
        None => return Err("a model is required".into()),
    };
    let mut seats_model = SeatsModel::new(SeatsDesign::Correct);
    let mut model = AppendModel::new(2, 2, 1, AppendDesign::Correct);
    let mut outbox_model = OutboxModel::new(1, 1, OutboxDesign::Correct);
    let mut search = Search::Bfs;
    let mut symmetry = false;
    let mut threads = 1;
    let mut port = 3000u16;
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        if flag == "--dfs" {
            search = Search::Dfs;
            continue;
        }
        if flag == "--symmetry" {
            if outbox || seats {
                return Err("--symmetry applies to the append model only".into());
            }
            symmetry = true;
            continue;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let small = |limit: u8| -> Result<u8, String> {
            match value.parse::<u8>() {
                Ok(n) if (1..=limit).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{flag} takes a number from 1 to {limit}, not '{value}'"
                )),
            }
        };
        match flag.as_str() {
            "--handlers" if !outbox => model.handlers = small(6)?,
            "--commands" if !outbox => model.commands = small(6)?,
            "--requests" if outbox => outbox_model.requests = small(2)?,
            "--crashes" => {
                let crashes = value
                    .parse()
                    .map_err(|_| format!("--crashes takes a number, not '{value}'"))?;
                model.crashes = crashes;
                outbox_model.crashes = crashes;
            }
            "--design" if seats => {
                seats_model.design = SeatsDesign::ALL
                    .into_iter()
                    .find(|d| d.name() == value)
                    .ok_or_else(|| format!("unknown design '{value}' for seats"))?
            }
            "--design" if outbox => {
                outbox_model.design = OutboxDesign::ALL
                    .into_iter()
                    .find(|d| d.name() == value)
                    .ok_or_else(|| format!("unknown design '{value}' for outbox"))?
            }
            "--domain" if !outbox && !seats && args[1] == "append" => {
                model.domain = AppendDomain::ALL
                    .into_iter()
                    .find(|d| d.name() == value)
                    .ok_or_else(|| {
                        format!("unknown domain '{value}' for append; known: account, station")
                    })?
            }
            "--design" => {
                model.design = AppendDesign::ALL
                    .into_iter()
                    .find(|d| d.name() == value)
                    .ok_or_else(|| format!("unknown design '{value}' for append"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .map_err(|_| format!("--threads takes a number, not '{value}'"))?
            }
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("--port takes a port number, not '{value}'"))?
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    Ok(Options {
        explore,
        symmetry,
        model: if seats {
            Which::Seats(seats_model)
        } else if outbox {
            Which::Outbox(outbox_model)
        } else {
            Which::Append(model)
        },
        search,
        threads,
        port,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let heading = match &options.model {
        Which::Append(model) => format!(
            "model append · {} · {} handlers × {} commands · {} crash(es) · design {}",
            model.domain.name(),
            model.handlers,
            model.commands,
            model.crashes,
            model.design.name()
        ),
        Which::Outbox(model) => format!(
            "model outbox · {} request(s) · {} crash(es), {} loss, {} duplicate, {} timeouts · design {}",
            model.requests,
            model.crashes,
            model.losses,
            model.duplicates,
            model.ticks,
            model.design.name()
        ),
        Which::Seats(model) => format!(
            "model seats · requests {:?} of a {}-seat show · design {}",
            model.requests,
            model.capacity,
            model.design.name()
        ),
    };
    println!("{heading}");
    match options.model {
        Which::Append(ref model) if options.symmetry && !options.explore => {
            let report = report::check_symmetric(model.clone(), options.threads);
            print!("search: depth first with symmetry reduction\n{report}");
            exit_code(&report)
        }
        Which::Append(ref model) => run(model.clone(), &options),
        Which::Outbox(ref model) => run(model.clone(), &options),
        Which::Seats(ref model) => run(model.clone(), &options),
    }
}

/// Serves the Explorer for `model`, or checks it and prints the report.
fn run<M>(model: M, options: &Options) -> ExitCode
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: std::hash::Hash + PartialEq + std::fmt::Debug + Clone + Send + Sync + 'static,
    M::Action: std::fmt::Debug + std::fmt::Display + Clone + PartialEq + Send + Sync + 'static,
{
    if options.explore {
        let address = format!("127.0.0.1:{}", options.port);
        println!("Explorer on http://{address}/ (Ctrl-C to stop)");
        model.checker().threads(options.threads).serve(address);
        return ExitCode::SUCCESS;
    }
    let report = report::check(model, options.search, options.threads);
    print!("{report}");
    exit_code(&report)
}

fn exit_code(report: &report::Report) -> ExitCode {
    if report.all_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
