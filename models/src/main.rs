//! `evsource-models`: check a model exhaustively, or browse its state space. Usually run
//! through `cargo xtask models`.

use std::process::ExitCode;

use evsource_models::append::{AppendDesign, AppendModel};
use evsource_models::report::{self, Search};
use stateright::Model;

const USAGE: &str = "usage:
  evsource-models check <model> [--handlers K] [--commands M] [--crashes C] [--design D] [--dfs] [--threads T]
  evsource-models explore <model> [same options] [--port P]   serves stateright's Explorer on 127.0.0.1

models:  append   K handlers × M withdrawals on one account: load → decide → append(Exact),
                  retry on conflict, crash at any step (defaults: 2 × 2, 1 crash)
designs: correct (default), naive-read-model (N2), naive-version-check (N3)";

struct Options {
    explore: bool,
    model: AppendModel,
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
    match args.get(1).map(String::as_str) {
        Some("append") => {}
        Some(other) => return Err(format!("unknown model '{other}'; known: append")),
        None => return Err("a model is required".into()),
    }
    let mut model = AppendModel::new(2, 2, 1, AppendDesign::Correct);
    let mut search = Search::Bfs;
    let mut threads = 1;
    let mut port = 3000u16;
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        if flag == "--dfs" {
            search = Search::Dfs;
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
            "--handlers" => model.handlers = small(6)?,
            "--commands" => model.commands = small(6)?,
            "--crashes" => {
                model.crashes = value
                    .parse()
                    .map_err(|_| format!("--crashes takes a number, not '{value}'"))?
            }
            "--design" => {
                model.design = AppendDesign::ALL
                    .into_iter()
                    .find(|d| d.name() == value)
                    .ok_or_else(|| format!("unknown design '{value}'"))?
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
        model,
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
    let model = options.model;
    println!(
        "model append · {} handlers × {} commands · {} crash(es) · design {}",
        model.handlers,
        model.commands,
        model.crashes,
        model.design.name()
    );
    if options.explore {
        let address = format!("127.0.0.1:{}", options.port);
        println!("Explorer on http://{address}/ (Ctrl-C to stop)");
        model.checker().threads(options.threads).serve(address);
        return ExitCode::SUCCESS;
    }
    let report = report::check(model, options.search, options.threads);
    print!("{report}");
    if report.all_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
