//! Interoperability with an independent OCPP 1.6-J implementation: the PyPI `ocpp`
//! package, as a charge point (`tests/interop/charge_point.py`), against the real
//! `evsource serve` binary on 127.0.0.1. The script drives boot, heartbeat, status
//! notifications, a remote start accepted and one rejected (requested through the
//! operator API), a transaction, a replaced connection, and a reconnect, and the `ocpp`
//! package checks every frame the CSMS sends against its bundled OCPP 1.6 schemas. This
//! test then reads the station's events back through the API and checks that the CSMS
//! recorded what happened.
//!
//! The Python comes from `EVSOURCE_PYTHON` (`cargo xtask test` creates a virtualenv with
//! `tests/interop/requirements.txt` and sets it), else `python3`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use evsource::node::client::ApiClient;

const TOKEN: &str = "interop-operator-token-0001";

/// The server process, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(token: Option<&str>) -> (Server, Option<SocketAddr>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evsource"));
    command
        .args(["serve", "--store", "memory:", "--listen", "127.0.0.1:0"])
        .env_remove("EVSOURCE_OPERATOR_TOKEN")
        .env("EVSOURCE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("EVSOURCE_OPERATOR_TOKEN", token);
    }
    let mut child = command.spawn().expect("the evsource binary starts");
    let stdout = child.stdout.take().expect("piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("reads stdout");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .map(|a| a.parse().expect("an address"));
    (Server(child), addr)
}

fn python() -> String {
    match std::env::var("EVSOURCE_PYTHON") {
        Ok(path) if Path::new(&path).is_relative() => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(path)
            .to_string_lossy()
            .into_owned(),
        Ok(path) => path,
        Err(_) => "python3".into(),
    }
}

#[test]
fn the_pypi_ocpp_charge_point_works_against_evsource_serve() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import ocpp, websockets"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "{python} cannot import the `ocpp` and `websockets` packages: run `cargo xtask test`, \
         or set EVSOURCE_PYTHON to a Python that has tests/interop/requirements.txt installed"
    );
    let (_server, addr) = start_server(Some(TOKEN));
    let addr = addr.expect("the server printed its address");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/charge_point.py");
    let output = Command::new(&python)
        .arg(&script)
        .args([addr.to_string(), TOKEN.to_owned()])
        .output()
        .expect("the interop script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("interop: ok"),
        "the interop script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    // What the CSMS recorded, read back through the operator API.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let types = |stream: &str| {
        runtime.block_on(async {
            let mut api = ApiClient::connect(addr, TOKEN).await.unwrap();
            let path = format!("/api/stations/PY-CP-1/events?stream={stream}&limit=1000");
            let (status, body) = api.request("GET", &path, None).await.unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_owned())
                .collect::<Vec<String>>()
        })
    };
    let business = types("station");
    for expected in [
        "UnlockRequested",
        "UnlockAccepted",
        "UnlockRejected",
        "SessionStopped",
    ] {
        assert!(
            business.iter().any(|t| t == expected),
            "{expected} missing from {business:?}"
        );
    }
    assert_eq!(
        business.iter().filter(|t| *t == "UnlockRequested").count(),
        2,
        "two unlocks were requested: {business:?}"
    );
    let telemetry = types("telemetry");
    for expected in [
        "BootAccepted",
        "HeartbeatReceived",
        "StatusReported",
        "RemoteStartAnswered",
        "TransactionStarted",
        "TransactionStopped",
        "Disconnected",
    ] {
        assert!(
            telemetry.iter().any(|t| t == expected),
            "{expected} missing from {telemetry:?}"
        );
    }
}

#[test]
fn serve_refuses_to_start_without_an_operator_token() {
    let (mut server, addr) = start_server(None);
    assert_eq!(addr, None, "no address is printed");
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(2), "a usage error");
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("operator token"), "{stderr}");
}
