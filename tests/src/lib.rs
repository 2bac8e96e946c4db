//! Integration test harness shared by every test that needs the real services.
//!
//! - [`stack`]: starts the local stack (`dev/stack up`, idempotent and safe to call from parallel
//!   test binaries) or uses external services named by environment variables.
//! - [`unique`]: names that no other test, or earlier run, uses.
//! - [`eventually`]: polls a condition until it holds or a deadline passes; no test sleeps for a
//!   fixed time.
//! - [`next_events`]: reads change events with a deadline.
//! - [`TopicReader`]: reads topics from the beginning into [`Record`]s until a condition holds.
//! - [`client_config`]: the configuration librdkafka clients report they run with (`debug=conf`).
//! - [`corpus`]: the corpus of real-shaped source documents with their expected events.
//! - [`bad_input`]: the bad-input corpus generated from a seed, each item classified.
//! - [`http_get`], [`until_healthy`], [`InProcess`], [`Daemon`]: talk to a process's `/health`
//!   endpoint; run the connector or the projectors in the test process, or a built binary that is
//!   stopped with SIGTERM like an orchestrator would.
//! - [`DEADLINE`]: the one deadline of every step of every test.
//!
//! Environment:
//! - `STOREFRONT_TEST_MONGO_URI`: use this MongoDB instead of the local test server.
//! - `STOREFRONT_TEST_KAFKA_BOOTSTRAP`: use these Kafka brokers instead of the local broker.
//! - `STACK_MONGO_PORT`, `STACK_KAFKA_PORT`: ports of the local stack (as `dev/stack` reads them).
//! - `STOREFRONT_TEST_KAFKA_SASL_BOOTSTRAP`, `..._USER`, `..._PASSWORD` (and optionally
//!   `..._MECHANISM`, default `SCRAM-SHA-512`, `..._PROTOCOL`, default `SASL_PLAINTEXT`): the
//!   SASL listener to test authenticated clients against instead of the local broker's, whose
//!   address and user come from `dev/stack env`.

pub mod bad_input;
pub mod client_config;
pub mod corpus;
pub mod guard;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mongodb::change_stream::ChangeStream;
use serde::de::DeserializeOwned;
use storefront_plumbing::errors;
use storefront_plumbing::process::RunningProcess;
use storefront_plumbing::settings::{KafkaSettings, MongoSettings};

/// The services the tests talk to.
#[derive(Debug, Clone)]
pub struct Stack {
    /// MongoDB connection string.
    pub mongo_uri: String,
    /// Kafka bootstrap servers.
    pub kafka_bootstrap: String,
    /// Whether MongoDB is the local test server (which tests may stop and restart).
    pub local_mongo: bool,
    /// Whether Kafka is the local broker (which tests may stop and start).
    pub local_kafka: bool,
    /// Kafka's SASL listener and its user, if there is one (the local broker has one unless
    /// `dev/stack` runs with `STACK_KAFKA_SASL=0`).
    pub kafka_sasl: Option<SaslListener>,
}

/// A Kafka listener that authenticates clients with SASL, and a user it accepts.
#[derive(Clone)]
pub struct SaslListener {
    /// Bootstrap servers of the listener.
    pub bootstrap: String,
    /// `security.protocol`: `SASL_PLAINTEXT` for the local broker.
    pub protocol: String,
    /// `sasl.mechanism`: `SCRAM-SHA-512` for the local broker.
    pub mechanism: String,
    /// The user's name.
    pub username: String,
    /// The user's password.
    pub password: String,
}

impl std::fmt::Debug for SaslListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslListener")
            .field("bootstrap", &self.bootstrap)
            .field("protocol", &self.protocol)
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Mongo settings for a process under test.
    pub fn mongo_settings(&self) -> MongoSettings {
        MongoSettings {
            uri: self.mongo_uri.clone(),
            ..MongoSettings::default()
        }
    }

    /// Kafka settings for a process under test.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: self.kafka_bootstrap.clone(),
            ..KafkaSettings::default()
        }
    }

    /// Kafka settings for a process under test that logs in on the SASL listener as its user,
    /// through the named settings (`kafka.security_protocol`, `kafka.sasl_*`); `None` without a
    /// SASL listener.
    pub fn kafka_sasl_settings(&self) -> Option<KafkaSettings> {
        let sasl = self.kafka_sasl.as_ref()?;
        Some(KafkaSettings {
            bootstrap_servers: sasl.bootstrap.clone(),
            security_protocol: Some(sasl.protocol.clone()),
            sasl_mechanism: Some(sasl.mechanism.clone()),
            sasl_username: Some(sasl.username.clone()),
            sasl_password: Some(sasl.password.clone()),
            ..KafkaSettings::default()
        })
    }

    /// A new MongoDB client.
    pub async fn mongo_client(&self) -> mongodb::Client {
        storefront_plumbing::mongo::connect(&self.mongo_settings(), "storefront-tests")
            .await
            .unwrap()
    }

    /// Stops and starts the local MongoDB test server, keeping its data.
    pub fn restart_mongo(&self) {
        assert!(self.local_mongo, "cannot restart an external MongoDB");
        run_stack(&["restart", "mongo"]);
    }

    /// Stops the local Kafka broker (its data stays) until the returned guard starts it again.
    pub fn stop_kafka(&self) -> StoppedService {
        assert!(self.local_kafka, "cannot stop an external Kafka");
        StoppedService::stop("kafka")
    }

    /// Stops the local MongoDB test server (its data stays) until the returned guard starts it
    /// again.
    pub fn stop_mongo(&self) -> StoppedService {
        assert!(self.local_mongo, "cannot stop an external MongoDB");
        StoppedService::stop("mongo")
    }
}

/// A service of the local stack, stopped by [`Stack::stop_kafka`] or [`Stack::stop_mongo`].
/// [`Self::start`] starts it again and waits until it is ready; dropped unstarted (a test failing
/// half-way), it starts it too, so the tests after it find the service up.
#[derive(Debug)]
#[must_use = "the service stays down until this is started or dropped"]
pub struct StoppedService {
    service: &'static str,
    started: bool,
}

impl StoppedService {
    fn stop(service: &'static str) -> Self {
        run_stack(&["down", service]);
        Self {
            service,
            started: false,
        }
    }

    /// Starts the service and waits until it is ready.
    pub fn start(mut self) {
        run_stack(&["up", self.service]);
        self.started = true;
    }
}

impl Drop for StoppedService {
    fn drop(&mut self) {
        if !self.started {
            run_stack(&["up", self.service]);
        }
    }
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn run_stack(args: &[&str]) {
    let script = repo_root().join("dev").join("stack");
    let status = Command::new(&script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "`dev/stack {}` failed ({status}); see `dev/stack logs`",
        args.join(" ")
    );
}

/// The `export NAME=value` lines of `dev/stack env`, values unquoted.
fn stack_env() -> std::collections::BTreeMap<String, String> {
    let script = repo_root().join("dev").join("stack");
    let output = Command::new(&script)
        .arg("env")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "`dev/stack env` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("dev/stack env prints UTF-8")
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), shell_unquote(value)))
        .collect()
}

/// The value of a shell word made of single-quoted parts and `\'` (as `dev/stack env` writes).
fn shell_unquote(word: &str) -> String {
    let mut value = String::new();
    let mut quoted = false;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (_, '\'') => quoted = !quoted,
            (false, '\\') => value.extend(chars.next()),
            (_, c) => value.push(c),
        }
    }
    value
}

/// The SASL listener the tests use: an external one named by `STOREFRONT_TEST_KAFKA_SASL_*`, or
/// the local broker's (from `dev/stack env`) when Kafka is local.
fn sasl_listener(local_kafka: bool) -> Option<SaslListener> {
    let external = |name: &str| std::env::var(format!("STOREFRONT_TEST_KAFKA_SASL_{name}")).ok();
    if let Some(bootstrap) = external("BOOTSTRAP") {
        return Some(SaslListener {
            bootstrap,
            protocol: external("PROTOCOL").unwrap_or_else(|| "SASL_PLAINTEXT".into()),
            mechanism: external("MECHANISM").unwrap_or_else(|| "SCRAM-SHA-512".into()),
            username: external("USER").expect("STOREFRONT_TEST_KAFKA_SASL_USER"),
            password: external("PASSWORD").expect("STOREFRONT_TEST_KAFKA_SASL_PASSWORD"),
        });
    }
    if !local_kafka {
        return None;
    }
    let mut env = stack_env();
    if env.get("STACK_KAFKA_SASL").map(String::as_str) != Some("1") {
        return None;
    }
    let mut take = |name: &str| {
        env.remove(name)
            .unwrap_or_else(|| panic!("`dev/stack env` prints no {name}"))
    };
    Some(SaslListener {
        bootstrap: take("KAFKA_SASL_BOOTSTRAP"),
        protocol: "SASL_PLAINTEXT".into(),
        mechanism: take("STACK_KAFKA_SASL_MECHANISM"),
        username: take("STACK_KAFKA_SASL_USER"),
        password: take("STACK_KAFKA_SASL_PASSWORD"),
    })
}

/// The services for this test binary, starting the local ones on first use.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let external_mongo = std::env::var("STOREFRONT_TEST_MONGO_URI").ok();
        let external_kafka = std::env::var("STOREFRONT_TEST_KAFKA_BOOTSTRAP").ok();
        match (&external_mongo, &external_kafka) {
            (Some(_), Some(_)) => {}
            (Some(_), None) => run_stack(&["up", "kafka"]),
            (None, Some(_)) => run_stack(&["up", "mongo"]),
            (None, None) => run_stack(&["up"]),
        }
        Stack {
            kafka_sasl: sasl_listener(external_kafka.is_none()),
            local_mongo: external_mongo.is_none(),
            local_kafka: external_kafka.is_none(),
            mongo_uri: external_mongo.unwrap_or_else(|| {
                format!(
                    "mongodb://127.0.0.1:{}/?directConnection=true",
                    env_or("STACK_MONGO_PORT", "27027")
                )
            }),
            kafka_bootstrap: external_kafka
                .unwrap_or_else(|| format!("127.0.0.1:{}", env_or("STACK_KAFKA_PORT", "29092"))),
        }
    })
}

/// A name no other test or earlier run uses: `<prefix>_<pid>_<counter>_<random>`. Valid as a
/// MongoDB database or collection name, a Kafka topic and a consumer group.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random::<u32>() % 1_000_000;
    format!("{prefix}_{}_{n}_{salt}", std::process::id())
}

/// Polls `probe` until it returns `Some`, panicking with `what` when `deadline` passes. The pause
/// between polls grows from 10 ms to 250 ms, so fast conditions are seen quickly and slow ones do
/// not spin.
pub async fn eventually<T>(
    deadline: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// How long any one step of a test may take: most take well under a second, a whole storefront
/// converging on the loaded 2-core CI machine takes tens of seconds. One deadline for every test,
/// so a slow machine needs one change.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Reads the next `count` change events within [`DEADLINE`], polling with `next_if_any` (each poll
/// one getMore, which the server holds open up to its maxAwaitTimeMS when nothing is new), so a
/// test never waits past its deadline on a stream that stays quiet.
pub async fn next_events<T>(stream: &mut ChangeStream<T>, count: usize) -> Vec<T>
where
    T: DeserializeOwned + Unpin + Send + Sync,
{
    let mut events = Vec::with_capacity(count);
    eventually(DEADLINE, &format!("{count} change events"), async || {
        while events.len() < count {
            let next = stream.next_if_any().await.expect("change stream failed");
            events.push(next?);
        }
        Some(())
    })
    .await;
    events
}

/// `GET http://<addr><path>`: the status code and body, or `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits until `GET /health` at `addr` answers 200 and returns the body; if it never does within
/// [`DEADLINE`], fails with the last answer (which names the components that were not ready).
pub async fn until_healthy(addr: SocketAddr) -> String {
    let mut last = None;
    let healthy = tokio::time::timeout(
        DEADLINE,
        eventually(
            DEADLINE,
            &format!("{addr}/health to answer 200"),
            async || {
                let answer = http_get(addr, "/health").await;
                let body = answer
                    .as_ref()
                    .filter(|(status, _)| *status == 200)
                    .map(|(_, body)| body.clone());
                last = answer;
                body
            },
        ),
    )
    .await;
    healthy.unwrap_or_else(|_| {
        panic!("{addr}/health not 200 within {DEADLINE:?}; last answer: {last:?}")
    })
}

/// A process (the connector, the projectors) running in this test process until [`Self::stop`].
#[derive(Debug)]
pub struct InProcess<E> {
    /// The running process.
    pub process: RunningProcess<E>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// What [`InProcess::start`] hands the process as its shutdown signal.
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<E: std::error::Error + 'static> InProcess<E> {
    /// Starts a process with `start` (given the stop signal) and waits until it is healthy.
    pub async fn start<S, Started>(start: S) -> Self
    where
        S: FnOnce(StopSignal) -> Started,
        Started: std::future::Future<Output = Result<RunningProcess<E>, E>>,
    {
        let started = Self::launch(start).await;
        until_healthy(started.http_addr()).await;
        started
    }

    /// Starts a process with `start` (given the stop signal), without waiting for it to be
    /// healthy (to watch it while it is still starting).
    pub async fn launch<S, Started>(start: S) -> Self
    where
        S: FnOnce(StopSignal) -> Started,
        Started: std::future::Future<Output = Result<RunningProcess<E>, E>>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let process = start(Box::pin(async move {
            let _ = stopped.await;
        }))
        .await
        .unwrap_or_else(|error| panic!("cannot start: {}", errors::chain(&error)));
        Self { process, stop }
    }

    /// Where its `/health` and `/metrics` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.process.http_addr
    }

    /// Stops it and waits for a clean exit within [`DEADLINE`].
    pub async fn stop(self) {
        let Self { process, stop } = self;
        // The process may have stopped by itself already: then nobody listens.
        let _ = stop.send(());
        tokio::time::timeout(DEADLINE, process.wait())
            .await
            .expect("the process stops before the deadline")
            .unwrap_or_else(|error| panic!("stopped with an error: {}", errors::chain(&error)));
    }

    /// Waits (within [`DEADLINE`]) until it stops by itself, with its outcome.
    pub async fn wait(self) -> Result<(), E> {
        let Self { process, stop } = self;
        let outcome = tokio::time::timeout(DEADLINE, process.wait())
            .await
            .expect("the process stops before the deadline");
        // Dropping the sender would be the stop signal: only now.
        drop(stop);
        outcome
    }
}

/// CPU seconds (user + system) used so far by process `pid` (benches read it from `/proc`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// A loopback port that was free a moment ago (for a child process's listen address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A binary running as a child process, killed if the test ends without stopping it.
#[derive(Debug)]
pub struct Daemon {
    child: tokio::process::Child,
}

impl Daemon {
    /// Starts `program` with `args`; its output goes to the test's output.
    pub fn spawn(program: &Path, args: &[&str]) -> Self {
        let child = tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self { child }
    }

    /// Starts `program` with `args`, its output (stdout and stderr) going to the file `log`.
    pub fn spawn_logged(program: &Path, args: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self { child }
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("process still running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the process to exit within [`DEADLINE`].
    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the process exits before the deadline")
            .unwrap()
    }
}

/// A built binary started as an operator would (a config file, `--http-listen`), logging JSON
/// (with librdkafka's debug lines, see [`client_config`]) to a file the test reads afterwards.
#[derive(Debug)]
pub struct LoggedRun {
    /// The process.
    pub daemon: Daemon,
    /// Where it serves `/health` and `/metrics`.
    pub listen: SocketAddr,
    dir: PathBuf,
}

impl LoggedRun {
    /// Starts `program` with `config` (TOML) and `command` (e.g. `["run"]`), and waits until it is
    /// healthy.
    pub async fn start(program: &Path, config: &str, command: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("logged_run"));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen_arg = listen.to_string();
        let mut args = vec![
            "--config",
            config_path.to_str().unwrap(),
            "--http-listen",
            &listen_arg,
        ];
        args.extend(client_config::LOG_FLAGS);
        args.extend(command);
        let daemon = Daemon::spawn_logged(program, &args, &dir.join("log.jsonl"));
        until_healthy(listen).await;
        Self {
            daemon,
            listen,
            dir,
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log.jsonl")).unwrap_or_default()
    }

    /// Stops it with SIGTERM; its exit status and log.
    pub async fn stop(&mut self) -> (std::process::ExitStatus, String) {
        self.daemon.signal("TERM");
        self.exited().await
    }

    /// Waits until it exits by itself; its exit status and log.
    pub async fn exited(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.daemon.exit_status().await;
        (status, self.log())
    }
}

impl Drop for LoggedRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Kafka record as tests inspect it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key as UTF-8.
    pub key: Option<String>,
    /// Body; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Headers as UTF-8.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Record {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.payload.as_deref().expect("a payload")).unwrap()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing in {:?}", self.headers))
    }
}

/// Reads topics from their beginning (a fresh consumer group), keeping every record seen.
pub struct TopicReader {
    consumer: rdkafka::consumer::StreamConsumer<storefront_plumbing::kafka::TracingContext>,
    /// Every record read so far, in arrival order.
    pub records: Vec<Record>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl TopicReader {
    /// A reader of `topics` from offset 0.
    pub fn new(topics: &[&str]) -> Self {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::StreamConsumer<_> =
            storefront_plumbing::kafka::consumer_config(
                &stack().kafka_settings(),
                "storefront-tests",
                &unique("reader"),
                &[],
            )
            .create_with_context(storefront_plumbing::kafka::TracingContext)
            .unwrap();
        consumer.subscribe(topics).unwrap();
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `done(records)` holds, panicking with `what` after `deadline`.
    pub async fn read_until(
        &mut self,
        deadline: Duration,
        what: &str,
        mut done: impl FnMut(&[Record]) -> bool,
    ) -> &[Record] {
        use rdkafka::message::{Headers, Message};
        let started = Instant::now();
        while !done(&self.records) {
            let left = deadline.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "timed out after {deadline:?} waiting for {what}; read {} records",
                self.records.len()
            );
            let Ok(received) = tokio::time::timeout(left, self.consumer.recv()).await else {
                continue;
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    // Transient consumer errors (a topic's leader not yet known, a rebalance)
                    // are reported and retried; the deadline still bounds the wait.
                    eprintln!("topic reader: {error}");
                    continue;
                }
            };
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), text(h.value.unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default();
            self.records.push(Record {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(text),
                payload: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
        &self.records
    }
}

/// Installs a global log subscriber at `debug` that keeps every line this process logs, and
/// returns the buffer. In-process connectors and projectors log through it (their own
/// subscriber setup keeps the first one installed), so a test can search their logs, e.g. for a
/// value that must never be logged. Call it once per test binary, before anything logs.
pub fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let capture = Capture(buffer.clone());
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || capture.clone())
        .init();
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_stack_env_values_are_unquoted() {
        assert_eq!(shell_unquote("'127.0.0.1:29094'"), "127.0.0.1:29094");
        assert_eq!(shell_unquote(r#"'it'\''s "x"'"#), r#"it's "x""#);
        assert_eq!(shell_unquote("''"), "");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique("db"), unique("db"));
        assert!(unique("topic").starts_with("topic_"));
    }

    #[tokio::test]
    async fn eventually_returns_once_the_probe_succeeds() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(5), "third call", async || {
            calls += 1;
            (calls >= 3).then_some(calls)
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out")]
    async fn eventually_panics_at_the_deadline() {
        eventually(Duration::from_millis(50), "never", async || None::<()>).await;
    }
}
