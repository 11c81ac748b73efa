//! Starting the real `dialogue-ledger` binary on a free port, and stopping it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};

/// How long the server may take to start or to stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// The server binary of this build profile, built first so a test never runs a stale one
/// (a no-op when `cargo test --workspace` has just built it).
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| built("dialogue-ledger", "dialogue-ledger"))
}

/// The load generator's binary of this build profile, built first.
pub fn load_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| built("ledger-loadgen", "ledger-load"))
}

/// Builds `binary` of `package` in this test's build profile; its path.
fn built(package: &str, binary: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", package, "--bin", binary]);
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
        None => panic!("cannot tell the build profile from {}", exe.display()),
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {binary}: {e}"));
    assert!(status.success(), "building {binary} failed");
    profile_dir.join(binary)
}

/// `message` with the bearer `token` the server's RPCs need.
pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The subscription's next change, failing the test if none arrives within 20 s.
pub async fn next_change(
    stream: &mut tonic::Streaming<ledger_proto::v1::ReadModelChange>,
) -> ledger_proto::v1::ReadModelChange {
    let arrived = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
    arrived.expect("no change arrived").unwrap().unwrap()
}

/// Sets up tenant acme's org unit `sales` and registers `people` (id, display name) in it, as the
/// hr-sync service.
pub async fn set_up_sales(server: &ServerProcess, people: &[(&str, &str)]) {
    use ledger_proto::v1 as api;
    use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
    let service = server.token("acme", "hr-sync", &["service"]);
    let mut org = OrgDirectoryClient::new(server.channel().await);
    let unit = api::DefineOrgUnitRequest {
        command_id: "u".into(),
        org_unit_id: "sales".into(),
        name: "Sales".into(),
        ..Default::default()
    };
    org.define_org_unit(authed(&service, unit)).await.unwrap();
    for (id, name) in people {
        let register = api::RegisterPersonRequest {
            command_id: format!("r-{id}"),
            person_id: (*id).into(),
            display_name: (*name).into(),
            org_unit_id: "sales".into(),
            ..Default::default()
        };
        org.register_person(authed(&service, register))
            .await
            .unwrap();
    }
}

/// A running server process. Killed when dropped, unless stopped before.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    data_dir: PathBuf,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `dialogue-ledger serve` on a free loopback port with `data_dir`, and waits until it
    /// listens.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Like [`ServerProcess::start`], with more arguments to `serve`.
    pub fn start_with(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(data_dir, args, &[])
    }

    /// Like [`ServerProcess::start_with`], with environment variables too.
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(server_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the server");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (listening, addr) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("dialogue ledger listening") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|rest| rest.split(' ').next());
                    let _ = listening.send(addr.and_then(|addr| addr.parse().ok()));
                }
                lines.lock().unwrap().push(line);
            }
        });
        match addr.recv_timeout(PATIENCE) {
            Ok(Some(addr)) => Self {
                child,
                data_dir: data_dir.to_owned(),
                addr,
                log,
            },
            _ => {
                let _ = child.kill();
                panic!(
                    "the server did not start; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL a gRPC client connects to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A token from `dialogue-ledger token` with the server's own key, valid for an hour.
    pub fn token(&self, tenant: &str, subject: &str, roles: &[&str]) -> String {
        let mut command = Command::new(server_binary());
        command
            .args([
                "token",
                "--tenant",
                tenant,
                "--subject",
                subject,
                "--data-dir",
            ])
            .arg(&self.data_dir);
        for role in roles {
            command.args(["--role", role]);
        }
        let output = command.output().expect("cannot run the token command");
        assert!(
            output.status.success(),
            "token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        stdout
            .lines()
            .last()
            .expect("token printed nothing")
            .to_owned()
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// What the health check says of the whole server (readiness).
    pub async fn serving(&self) -> ServingStatus {
        let mut health = HealthClient::new(self.channel().await);
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let status = health.check(request).await.unwrap().into_inner().status;
        ServingStatus::try_from(status).unwrap()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process with SIGKILL and waits for it to die.
    pub fn kill(&mut self) {
        self.child.kill().expect("cannot kill the server");
        self.child.wait().expect("cannot reap the server");
    }

    /// Sends SIGTERM and waits for the process to exit, without blocking the runtime (whose
    /// client connections the server waits for while it drains).
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
