//! The connector and the projectors as child processes of their built binaries, so the suite can
//! `kill -9` each one and start it again as an orchestrator would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use storefront_tests::{Daemon, http_get, repo_root};

/// The built `cdc-connector` and `projectors` binaries.
#[derive(Debug)]
pub struct Binaries {
    pub connector: PathBuf,
    pub projectors: PathBuf,
}

/// Builds both binaries (once per test binary) with the Cargo running the tests and returns
/// their paths as Cargo reports them. `env!("CARGO_BIN_EXE_...")` exists only in the binaries' own
/// packages, and `cargo test -p storefront-tests` does not build other packages' binaries, so the
/// suite asks Cargo: a no-op when they are fresh (after `cargo test --workspace` they are), and
/// never a stale binary left in `target/` by an earlier build.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(repo_root())
            .args(["build", "-p", "cdc-connector", "-p", "projectors", "--bins"])
            .arg("--message-format=json-render-diagnostics")
            .stderr(Stdio::inherit());
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        // Without the variables Cargo set for this test binary (`CARGO_PKG_NAME`, ...): build
        // scripts that watch them (ring's does) would see them changed from the outer build and
        // rebuild their crates, and the outer build would rebuild them back next time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                command.env_remove(name.as_ref());
            }
        }
        let output = command.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "cargo build of the binaries failed"
        );
        let executable = |name: &str| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|message| message["reason"] == "compiler-artifact")
                .filter(|message| message["target"]["name"] == name)
                .find_map(|message| message["executable"].as_str().map(PathBuf::from))
                .unwrap_or_else(|| panic!("cargo built no {name} executable"))
        };
        Binaries {
            connector: executable("cdc-connector"),
            projectors: executable("projectors"),
        }
    })
}

/// One role (the connector, one projector): a binary, its config file and `/health` address,
/// started again after each death, each run logging JSON to its own file.
#[derive(Debug)]
pub struct Process {
    pub name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    pub listen: SocketAddr,
    dir: PathBuf,
    runs: u32,
    daemon: Option<Daemon>,
}

impl Process {
    /// A role running `program --config <config> <command>`, serving `/health` on `listen`
    /// (which `config` must name), its files in `dir`. Not started yet.
    pub fn new(
        name: &'static str,
        program: &Path,
        config: &str,
        command: &[&str],
        listen: SocketAddr,
        dir: &Path,
    ) -> Self {
        let config_path = dir.join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&config_path, config).unwrap();
        let mut args: Vec<String> = vec![
            "--config".into(),
            config_path.to_str().unwrap().into(),
            "--log-format".into(),
            "json".into(),
            "--log-filter".into(),
            "info".into(),
        ];
        args.extend(command.iter().map(|arg| (*arg).to_owned()));
        Self {
            name,
            program: program.to_owned(),
            args,
            listen,
            dir: dir.to_owned(),
            runs: 0,
            daemon: None,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.jsonl",
            self.name.replace(' ', "-"),
            self.runs
        ))
    }

    /// Starts a new run (without waiting for it to be healthy).
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "{} is running", self.name);
        self.runs += 1;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(Daemon::spawn_logged(&self.program, &args, &self.log_path()));
    }

    /// `kill -9`, and waits until the process is gone.
    pub async fn kill_9(&mut self) {
        let mut daemon = self.daemon.take().expect("running");
        daemon.signal("KILL");
        daemon.exit_status().await;
    }

    /// Waits until the process exits by itself.
    pub async fn exited(&mut self) -> ExitStatus {
        let mut daemon = self.daemon.take().expect("running");
        daemon.exit_status().await
    }

    /// SIGTERM, and a clean exit.
    pub async fn stop(&mut self) {
        let mut daemon = self.daemon.take().expect("running");
        daemon.signal("TERM");
        let status = daemon.exit_status().await;
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.name,
            self.log()
        );
    }

    /// The current (or last) run's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `GET /health`: status and body, `None` while nothing answers.
    pub async fn health(&self) -> Option<(u16, String)> {
        http_get(self.listen, "/health").await
    }

    /// `GET /metrics`, empty while nothing answers.
    pub async fn metrics(&self) -> String {
        http_get(self.listen, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}
