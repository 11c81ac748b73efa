//! The server under load: one this run starts (on an embedded store in a temporary directory or
//! a given one), or one already running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dialogue_ledger::auth::{Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LocalKeys};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::ServerOptions;

#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) endpoint: String,
    keys: LocalKeys,
    child: Option<Child>,
    _data_dir: Option<tempfile::TempDir>,
    /// How long the started server took from its start to answering its health check, and to
    /// being ready (SERVING).
    pub(crate) started_in: Option<Duration>,
    pub(crate) ready_in: Option<Duration>,
}

impl Target {
    pub(crate) async fn open(options: &ServerOptions) -> anyhow::Result<Self> {
        if let Some(endpoint) = &options.target {
            let data_dir = options
                .data_dir
                .clone()
                .context("--target needs --data-dir: the server's quick-start key signs tokens")?;
            return Ok(Self {
                endpoint: endpoint.clone(),
                keys: LocalKeys::new(&data_dir),
                child: None,
                _data_dir: None,
                started_in: None,
                ready_in: None,
            });
        }
        let binary = match &options.server_binary {
            Some(binary) => binary.clone(),
            None => beside_this_binary("dialogue-ledger")?,
        };
        let (temporary, data_dir) = match &options.server_data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temporary = tempfile::tempdir()?;
                let dir = temporary.path().to_owned();
                (Some(temporary), dir)
            }
        };
        let port = free_port()?;
        let starting = Instant::now();
        let child = Command::new(&binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut target = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            keys: LocalKeys::new(&data_dir),
            child: Some(child),
            _data_dir: temporary,
            started_in: None,
            ready_in: None,
        };
        // A long history may take a while to fold before the server is ready.
        let patience = match options.server_data_dir {
            Some(_) => Duration::from_secs(3600),
            None => Duration::from_secs(30),
        };
        let (started_in, ready_in) = target.wait_until_serving(starting, patience).await?;
        target.started_in = Some(started_in);
        target.ready_in = Some(ready_in);
        Ok(target)
    }

    /// Waits until the server answers its health check at all (the port accepts connections
    /// before the server has set up, its token key among the rest), then until it is ready.
    /// Returns how long each took from `starting`.
    async fn wait_until_serving(
        &mut self,
        starting: Instant,
        readiness_patience: Duration,
    ) -> anyhow::Result<(Duration, Duration)> {
        self.wait_for_health(starting + Duration::from_secs(30), |_| true)
            .await
            .context("the server did not start")?;
        let answered = starting.elapsed();
        self.wait_for_health(starting + readiness_patience, |status| {
            status == ServingStatus::Serving as i32
        })
        .await
        .context("the server did not become ready")?;
        Ok((answered, starting.elapsed()))
    }

    async fn wait_for_health(
        &mut self,
        deadline: Instant,
        wanted: impl Fn(i32) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            if let Ok(channel) = Endpoint::from_shared(self.endpoint.clone())?
                .connect()
                .await
            {
                let check = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await;
                if check.is_ok_and(|answer| wanted(answer.into_inner().status)) {
                    return Ok(());
                }
            }
            if let Some(child) = &mut self.child
                && let Some(exit) = child.try_wait()?
            {
                anyhow::bail!("the server exited: {exit}");
            }
            anyhow::ensure!(Instant::now() < deadline, "gave up waiting");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(self.endpoint.clone())?
            .connect()
            .await?)
    }

    /// A token for `subject` in `tenant` with `roles`, valid for a day.
    pub(crate) fn token(
        &self,
        tenant: &str,
        subject: &str,
        roles: &[&str],
    ) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        self.keys.issue(&Claims {
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            sub: subject.into(),
            tenant: tenant.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            iat: now,
            exp: now + 86_400,
        })
    }

    /// The started server's peak resident memory so far, in KiB.
    pub(crate) fn peak_memory_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// The started server's resident memory now, in KiB.
    pub(crate) fn memory_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The CPU time the started server has used so far (user and system), in seconds.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&self.proc_file("stat")?)
    }

    /// The bytes the started server has sent to storage so far (`write_bytes` of
    /// `/proc/PID/io`: counted when it dirties a page of a file, so rewriting a page not yet
    /// written back counts once).
    pub(crate) fn disk_written_bytes(&self) -> Option<u64> {
        self.proc_figure("io", "write_bytes:")
    }

    /// A figure of `/proc/PID/status` in KiB.
    fn status_kib(&self, field: &str) -> Option<u64> {
        self.proc_figure("status", field)
    }

    /// The number after `field` in a `/proc/PID/{file}` of one `field: number` per line.
    fn proc_figure(&self, file: &str, field: &str) -> Option<u64> {
        let text = self.proc_file(file)?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The started server's `/proc/PID/{name}`; `None` for a server this run did not start.
    fn proc_file(&self, name: &str) -> Option<String> {
        let pid = self.child.as_ref()?.id();
        std::fs::read_to_string(format!("/proc/{pid}/{name}")).ok()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn beside_this_binary(name: &str) -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe()?;
    let dir = this.parent().map(Path::to_owned).unwrap_or_default();
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it (cargo build --release -p dialogue-ledger) or pass --server-binary",
        path.display()
    );
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The CPU time this process (the load generator) has used so far, in seconds: it shares the
/// machine with the server it drives.
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User and system time of a `/proc/PID/stat`, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    // utime and stime, in the kernel's USER_HZ ticks (100 a second on Linux).
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}
