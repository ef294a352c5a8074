//! A real Kafka-API broker for tests: tansu 0.6 with in-memory storage on a free loopback port.
//!
//! Compiled always rather than behind a feature: it needs nothing beyond std and rdkafka, which
//! this crate links anyway, and the tests of other crates (pipeline, cli) can use it from a
//! plain dev-dependency without feature juggling. Nothing in it runs unless a test calls it.
//!
//! ```no_run
//! use logcensus_kafka::testing::TestBroker;
//! // Prints "tansu not installed; skipping" and returns None when there is no tansu binary,
//! // unless LOGCENSUS_REQUIRE_BROKER=1, which turns that into a failure.
//! let Some(broker) = TestBroker::start() else { return };
//! logcensus_kafka::create_topic(&broker.brokers(), "logs", 3).unwrap();
//! ```
//!
//! Install tansu with `.ci/broker.sh`. The binary is looked up in `$LOGCENSUS_TANSU`, then
//! `tansu` on `PATH`, then `$CARGO_HOME/bin/tansu` and `~/.cargo/bin/tansu`.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Set to `1` to make a missing tansu binary fail tests instead of skipping them (CI sets it).
pub const REQUIRE_ENV: &str = "LOGCENSUS_REQUIRE_BROKER";

/// Set to the path of a tansu binary to use that one.
pub const BINARY_ENV: &str = "LOGCENSUS_TANSU";

/// How long a broker may take to answer a metadata request after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Variables tansu reads besides its arguments; cleared so the caller's environment cannot
/// point the test broker at real storage or telemetry.
const TANSU_ENV: &[&str] = &[
    "STORAGE_ENGINE",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// A tansu broker process serving `127.0.0.1:PORT` from memory, killed (by its PID) and its
/// directory removed on drop. Every instance is a fresh, empty cluster.
#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TestBroker {
    /// Starts a broker and waits until it answers a metadata request.
    ///
    /// Returns `None`, after printing `tansu not installed; skipping`, when no tansu binary is
    /// found; panics instead with how to install it when `LOGCENSUS_REQUIRE_BROKER=1`. Panics
    /// when a binary is found but no broker becomes ready within 20 s (that is a failure, not a
    /// skip).
    pub fn start() -> Option<TestBroker> {
        let Some(binary) = tansu_binary() else {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!(
                    "{REQUIRE_ENV}=1 but no tansu binary was found (looked at ${BINARY_ENV}, \
                     PATH and ~/.cargo/bin); install it with `bash .ci/broker.sh` \
                     (cargo install tansu --version 0.6.0 --locked --features dynostore)"
                );
            }
            eprintln!("tansu not installed; skipping (install it with `bash .ci/broker.sh`)");
            return None;
        };
        // A free port can be taken by someone else between our probe and tansu's bind; try a
        // few.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match TestBroker::spawn(&binary) {
                Ok(broker) => return Some(broker),
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "tansu at {} did not start: {}",
            binary.display(),
            failures.join("; ")
        );
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The loopback port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(binary: &Path) -> Result<TestBroker, String> {
        let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        // tansu reads ./.env, so it runs in a directory of its own.
        let dir = fresh_dir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let log = File::create(dir.join("tansu.log"))
            .map_err(|e| format!("cannot create {}: {e}", dir.join("tansu.log").display()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(binary);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for var in TANSU_ENV {
            command.env_remove(var);
        }
        let child = command.spawn().map_err(|e| {
            let _ = fs::remove_dir_all(&dir);
            format!("cannot run it: {e}")
        })?;
        // From here on, Drop kills the process and removes the directory.
        let mut broker = TestBroker { child, port, dir };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "it exited ({status}) on port {}: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("port {} never opened", self.port));
            }
            thread::sleep(Duration::from_millis(50));
        }
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .map_err(|e| e.to_string())?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match client.fetch_metadata(None, left.min(Duration::from_secs(2))) {
                Ok(_) => return Ok(()),
                Err(e) if left.is_zero() => {
                    return Err(format!(
                        "no metadata answer on port {} within {} s: {e}",
                        self.port,
                        READY_TIMEOUT.as_secs()
                    ))
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to exactly the process we started.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The tansu binary to run: `$LOGCENSUS_TANSU` (which must exist if set), else `tansu` on
/// `PATH`, else `$CARGO_HOME/bin/tansu`, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{BINARY_ENV}={} is not a file; unset it or point it at a tansu binary",
            path.display()
        );
        return Some(path);
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/tansu"));
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path
        .into_iter()
        .chain(cargo_home)
        .chain(home)
        .find(|p| p.is_file())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A name no other test (in this or another process) uses: `prefix-PID-N-NANOS`. For topics
/// and groups.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn fresh_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique_name("logcensus-tansu"));
    fs::create_dir(&dir)?;
    Ok(dir)
}
