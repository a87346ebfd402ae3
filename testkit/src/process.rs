//! Clusters of the real `trestle` binary, one process per node, for tests that kill -9, pause and
//! restart nodes, and (with [`ProcessOptions`]) cut the network between them (each node in its own
//! network namespace) or step their wall clocks (libfaketime).
//!
//! The binary is found at `$TRESTLE_BIN`, or next to the test executable's directory (cargo puts
//! `target/<profile>/trestle` one level above `target/<profile>/deps/<test>`); `scripts/test.sh` builds
//! it before the tests run.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use trestle_client::TableClient;

use crate::wait::eventually;

/// The `trestle` binary under test.
pub fn trestle_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TRESTLE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("trestle");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "the trestle binary was not found; build it with `cargo build -p trestle-storage-node --bin trestle` or set TRESTLE_BIN"
    )
}

/// The `trestle-planted` binary (built with `--features planted-bugs`; `scripts/test.sh` builds it):
/// `$TRESTLE_PLANTED_BIN`, or next to the `trestle` binary.
pub fn planted_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TRESTLE_PLANTED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = trestle_bin()?.with_file_name("trestle-planted");
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p trestle-storage-node --features planted-bugs --bin trestle` and copy it there (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// Reserves a free port on 127.0.0.1 (chosen by the OS) for a process that binds it right after.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How a [`ProcessCluster`] runs its nodes.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    /// How many nodes (at least 3; the first three hold every range at bootstrap).
    pub nodes: usize,
    /// Data ranges at bootstrap.
    pub ranges: usize,
    /// Each node in its own network namespace on a bridge ([`crate::netns`]), so the nemesis can cut
    /// links between nodes; otherwise every node listens on 127.0.0.1.
    pub namespaces: bool,
    /// Each node's wall clock under libfaketime with an offset the nemesis can step
    /// ([`ProcessCluster::set_clock_offset`]); monotonic clocks are left alone.
    pub faketime: bool,
    /// Each node's data directory on a FUSE file system that drops unsynced writes at
    /// [`ProcessCluster::power_off`] ([`crate::lossy_fs`]).
    pub lossy_disks: bool,
    /// The binary to run instead of [`trestle_bin`] (e.g. one built with planted bugs).
    pub bin: Option<PathBuf>,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
    /// Extra sections of every node's file (TOML, e.g. `[partition-manager]` settings).
    pub config: String,
}

impl Default for ProcessOptions {
    fn default() -> ProcessOptions {
        ProcessOptions {
            nodes: 3,
            ranges: 1,
            namespaces: false,
            faketime: false,
            lossy_disks: false,
            bin: None,
            env: Vec::new(),
            config: String::new(),
        }
    }
}

/// libfaketime's preload library as Debian installs it (package `libfaketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The three nodes' ports inside their namespaces (each namespace has its own port space).
const NS_GRPC_PORT: u16 = 7000;
const NS_REST_PORT: u16 = 8000;

pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    options: ProcessOptions,
    children: Vec<Option<Child>>,
    addrs: Vec<(IpAddr, u16, u16)>,
    network: Option<crate::netns::Network>,
    /// Each node's lossy data disk (with `lossy_disks`). Dropped after the children are killed
    /// (`Drop` kills them in its body; fields drop after it).
    disks: Vec<Option<crate::lossy_fs::LossyMount>>,
}

impl ProcessCluster {
    /// Starts three `trestle node` processes with `ranges` data ranges and waits until every range has a
    /// leader.
    pub async fn start(ranges: usize) -> anyhow::Result<ProcessCluster> {
        ProcessCluster::start_with(ProcessOptions {
            ranges,
            ..ProcessOptions::default()
        })
        .await
    }

    /// Starts three `trestle node` processes as `options` say and waits until every range has a leader.
    pub async fn start_with(options: ProcessOptions) -> anyhow::Result<ProcessCluster> {
        crate::init_logging();
        let bin = match &options.bin {
            Some(b) => b.clone(),
            None => trestle_bin()?,
        };
        if options.faketime && !Path::new(LIBFAKETIME).is_file() {
            bail!(
                "{LIBFAKETIME} is missing (Debian package libfaketime; scripts/test.sh installs it)"
            );
        }
        let dir = tempfile::tempdir()?;
        let network = if options.namespaces {
            Some(crate::netns::Network::create(options.nodes)?)
        } else {
            None
        };
        let addrs = (1..=options.nodes as u64)
            .map(|id| match &network {
                Some(net) => Ok((IpAddr::V4(net.ip(id)), NS_GRPC_PORT, NS_REST_PORT)),
                None => Ok((IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()?, free_port()?)),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut peers = String::new();
        for (i, (ip, grpc, rest)) in addrs.iter().enumerate() {
            peers += &format!(
                "[[peers]]\nid = {}\ngrpc-addr = \"{ip}:{grpc}\"\nrest-addr = \"{ip}:{rest}\"\n\n",
                i + 1,
            );
        }
        let ranges = options.ranges;
        // Mounted before any node starts (and before `ip netns exec`, whose mount namespace copies them).
        let disks = (0..options.nodes)
            .map(|_| {
                options
                    .lossy_disks
                    .then(crate::lossy_fs::LossyMount::temp)
                    .transpose()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (i, disk) in disks.iter().enumerate() {
            let data_dir = match disk {
                Some(disk) => disk.path().join(format!("node{}", i + 1)),
                None => dir.path().join(format!("node{}", i + 1)),
            };
            let cfg = format!(
                "node-id = {}\ndata-dir = \"{}\"\ninitial-ranges = {ranges}\ncluster-token = \"{PROCESS_CLUSTER_TOKEN}\"\n\n\
                 [raft]\ntick-ms = 20\n\n{}\n\n{peers}",
                i + 1,
                data_dir.display(),
                options.config,
            );
            std::fs::write(dir.path().join(format!("node{}.toml", i + 1)), cfg)?;
            if options.faketime {
                std::fs::write(dir.path().join(format!("node{}.faketime", i + 1)), "+0\n")?;
            }
        }
        let mut c = ProcessCluster {
            dir,
            bin,
            options,
            children: (0..addrs.len()).map(|_| None).collect(),
            addrs,
            network,
            disks,
        };
        for id in c.ids() {
            c.spawn(id)?;
        }
        c.wait_ready().await?;
        Ok(c)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let cfg = self.dir.path().join(format!("node{id}.toml"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))?;
        let mut command = match &self.network {
            Some(net) => net.command(id, &self.bin),
            None => Command::new(&self.bin),
        };
        command
            .args(["node", "--config"])
            .arg(&cfg)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        if self.options.faketime {
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.faketime_file(id))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.children[(id - 1) as usize] = Some(child);
        Ok(())
    }

    fn faketime_file(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.faketime"))
    }

    /// Steps node `id`'s wall clock to `offset_secs` away from the real time (the node sees it within
    /// about a second: libfaketime re-reads its offset file once a second). Needs `faketime`.
    pub fn set_clock_offset(&self, id: u64, offset_secs: i64) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.options.faketime,
            "the cluster was started without faketime"
        );
        std::fs::write(self.faketime_file(id), format!("{offset_secs:+}\n"))?;
        Ok(())
    }

    /// Power failure of node `id`: kill -9, then every write its disk had not fsynced is lost. Needs
    /// `lossy_disks`; [`ProcessCluster::restart`] boots it again.
    pub fn power_off(&mut self, id: u64) -> anyhow::Result<crate::lossy_fs::Dropped> {
        let disk = self.disks[(id - 1) as usize]
            .as_ref()
            .context("the cluster was started without lossy disks")?;
        // The process must be dead and reaped first: then every write it sent has been answered and
        // none can land after the power cut.
        if let Some(mut child) = self.children[(id - 1) as usize].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(disk.power_off())
    }

    /// The network of namespaces the nodes run in, if the cluster was started with `namespaces`.
    pub fn network(&self) -> Option<&crate::netns::Network> {
        self.network.as_ref()
    }

    /// The node ids (1..=n).
    pub fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.children.len() as u64
    }

    /// Whether node `id` has a process (it may be paused).
    pub fn is_running(&self, id: u64) -> bool {
        self.children[(id - 1) as usize].is_some()
    }

    pub fn grpc_endpoints(&self) -> Vec<String> {
        self.ids().map(|id| self.grpc_endpoint(id)).collect()
    }

    pub fn grpc_endpoint(&self, id: u64) -> String {
        let (ip, grpc, _) = self.addrs[(id - 1) as usize];
        format!("http://{ip}:{grpc}")
    }

    pub fn rest_endpoint(&self, id: u64) -> String {
        let (ip, _, rest) = self.addrs[(id - 1) as usize];
        format!("http://{ip}:{rest}")
    }

    /// A client of the development account (signed with its key) that knows every node.
    pub async fn client(&self) -> anyhow::Result<TableClient> {
        crate::dev_client(self.grpc_endpoints()).await
    }

    /// The node log, for assertion messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// Waits until every running node answers status and every range has a leader.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let ok = eventually(Duration::from_secs(60), || async {
            let mut leaders = std::collections::BTreeMap::new();
            for id in self.ids() {
                if self.children[(id - 1) as usize].is_none() {
                    continue;
                }
                let status = admin_status(&self.grpc_endpoint(id), PROCESS_CLUSTER_TOKEN).await?;
                for r in status.ranges {
                    if r.leader_node_id != 0 {
                        leaders.insert(r.range_id, r.leader_node_id);
                    }
                }
            }
            (!leaders.is_empty() && leaders.len() == self.range_count().await?).then_some(())
        })
        .await;
        if ok.is_none() {
            bail!("cluster did not become ready; node 1 log:\n{}", self.log(1));
        }
        Ok(())
    }

    /// How many ranges the running nodes host between them.
    async fn range_count(&self) -> Option<usize> {
        let mut ranges = std::collections::BTreeSet::new();
        for id in self.ids() {
            if self.children[(id - 1) as usize].is_some() {
                let s = admin_status(&self.grpc_endpoint(id), PROCESS_CLUSTER_TOKEN).await?;
                ranges.extend(s.ranges.iter().map(|r| r.range_id));
            }
        }
        (!ranges.is_empty()).then_some(ranges.len())
    }

    /// The leader of `range`, as the first reachable node reports it.
    pub async fn leader_of(&self, range: u64) -> Option<u64> {
        eventually(Duration::from_secs(20), || async {
            for id in self.ids() {
                if self.children[(id - 1) as usize].is_none() {
                    continue;
                }
                let s = admin_status(&self.grpc_endpoint(id), PROCESS_CLUSTER_TOKEN).await?;
                for r in s.ranges {
                    if r.range_id == range && r.leader_node_id != 0 {
                        return Some(r.leader_node_id);
                    }
                }
            }
            None
        })
        .await
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[(id - 1) as usize].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM: a clean shutdown (requests in flight are answered); waits for the process to exit.
    pub fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[(id - 1) as usize].take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP: the node freezes with its sockets open (a long GC pause, a stalled VM).
    pub fn pause(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-STOP")
    }

    /// SIGCONT after [`ProcessCluster::pause`].
    pub fn resume(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-CONT")
    }

    fn signal(&self, id: u64, signal: &str) -> anyhow::Result<()> {
        if let Some(child) = &self.children[(id - 1) as usize] {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "kill {signal} of node {id} failed");
        }
        Ok(())
    }

    /// Starts a new node that joins the running cluster through node `through` (`trestle node
    /// --join`): its file lists only itself, with `cluster_token` (the cluster's unless a test wants
    /// a wrong one). Returns its id (the next one) once its process is started; the caller judges
    /// whether it joined (a refused node exits: see [`ProcessCluster::exited`]). Loopback clusters
    /// only.
    pub fn join_node(&mut self, through: u64, cluster_token: &str) -> anyhow::Result<u64> {
        self.join_node_as(self.children.len() as u64 + 1, through, cluster_token)
    }

    /// Like [`ProcessCluster::join_node`], with the id the new node claims (a taken id is refused).
    pub fn join_node_as(
        &mut self,
        id: u64,
        through: u64,
        cluster_token: &str,
    ) -> anyhow::Result<u64> {
        anyhow::ensure!(
            self.network.is_none() && !self.options.lossy_disks,
            "joining nodes are supported on loopback clusters with plain disks"
        );
        let slot = self.children.len() as u64 + 1;
        let (ip, grpc, rest) = (IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()?, free_port()?);
        let (_, through_port, _) = self.addrs[(through - 1) as usize];
        let cfg = format!(
            "node-id = {id}\ndata-dir = \"{}\"\ncluster-token = \"{cluster_token}\"\n\
             join = \"127.0.0.1:{through_port}\"\n\n[raft]\ntick-ms = 20\n\n{}\n\n\
             [[peers]]\nid = {id}\ngrpc-addr = \"{ip}:{grpc}\"\nrest-addr = \"{ip}:{rest}\"\n",
            self.dir.path().join(format!("node{slot}")).display(),
            self.options.config,
        );
        std::fs::write(self.dir.path().join(format!("node{slot}.toml")), cfg)?;
        self.children.push(None);
        self.addrs.push((ip, grpc, rest));
        self.disks.push(None);
        self.spawn(slot)?;
        Ok(slot)
    }

    /// Waits (up to `timeout`) for node `id`'s process to exit on its own; its exit status, or `None`
    /// if it still runs.
    pub fn exited(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.children[(id - 1) as usize].as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.children[(id - 1) as usize] = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a killed node again on the same data directory.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        let endpoint = self.grpc_endpoint(id);
        let up = eventually(Duration::from_secs(30), || async {
            admin_status(&endpoint, PROCESS_CLUSTER_TOKEN).await
        })
        .await;
        if up.is_none() {
            bail!("node {id} did not come back; log:\n{}", self.log(id));
        }
        Ok(())
    }

    /// Stops every node with SIGTERM (a clean shutdown) and waits for them.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        for child in self.children.iter_mut() {
            if let Some(mut c) = child.take() {
                Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status()?;
                c.wait()?;
            }
        }
        Ok(())
    }

    /// The applied index of every range on node `id`.
    pub async fn applied(&self, id: u64) -> Option<Vec<(u64, u64)>> {
        let s = admin_status(&self.grpc_endpoint(id), PROCESS_CLUSTER_TOKEN).await?;
        Some(
            s.ranges
                .iter()
                .map(|r| {
                    (
                        r.range_id,
                        r.replicas.first().map(|x| x.applied_index).unwrap_or(0),
                    )
                })
                .collect(),
        )
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cluster token of every [`ProcessCluster`] (its nodes listen on loopback only).
pub const PROCESS_CLUSTER_TOKEN: &str = "process-test-cluster-token";

/// `msg` with the admin (or cluster) token `token` attached.
pub fn with_admin_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    trestle_proto::auth::insert(&mut r, trestle_proto::auth::ADMIN_TOKEN, token);
    r
}

/// Calls Admin.Status on a node with the admin token `token`, `None` if it is unreachable or refuses.
pub async fn admin_status(
    endpoint: &str,
    token: &str,
) -> Option<trestle_proto::admin::StatusResponse> {
    let mut c = trestle_proto::admin::admin_client::AdminClient::connect(endpoint.to_string())
        .await
        .ok()?;
    c.status(with_admin_token(
        trestle_proto::admin::StatusRequest {},
        token,
    ))
    .await
    .ok()
    .map(|r| r.into_inner())
}

/// A `trestle dev` process.
pub struct DevProcess {
    child: Option<Child>,
    pub rest: String,
    pub grpc: Vec<String>,
    /// The cluster (and admin) token `trestle dev` generated for its data directory.
    pub token: String,
}

impl DevProcess {
    /// Starts `trestle dev --data DIR` on OS-chosen ports and waits for its ready line.
    pub fn start(data: &Path) -> anyhow::Result<DevProcess> {
        DevProcess::start_with(data, &[])
    }

    /// [`DevProcess::start`] with more arguments (e.g. `--tls`). With `--tls` the addresses are
    /// `https://`.
    pub fn start_with(data: &Path, extra: &[&str]) -> anyhow::Result<DevProcess> {
        let scheme = if extra.contains(&"--tls") {
            "https"
        } else {
            "http"
        };
        let mut child = Command::new(trestle_bin()?)
            .args([
                "dev",
                "--rest-addr",
                "127.0.0.1:0",
                "--grpc-port",
                "0",
                "--data",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("dev stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(json) = line.strip_prefix("TRESTLE_READY ") {
                        break json.to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    bail!("trestle dev exited before it was ready");
                }
            }
        };
        let v: serde_json::Value = serde_json::from_str(&ready)?;
        let rest = format!("{scheme}://{}", v["rest"].as_str().unwrap_or_default());
        let grpc = v["grpc"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .map(|s| format!("{scheme}://{s}"))
                    .collect()
            })
            .unwrap_or_default();
        let token = std::fs::read_to_string(data.join("cluster-token"))
            .context("reading the dev cluster's token")?
            .trim()
            .to_string();
        Ok(DevProcess {
            child: Some(child),
            rest,
            grpc,
            token,
        })
    }

    /// Ctrl-C (SIGINT) and wait for a clean exit; returns whether it exited successfully.
    pub fn interrupt(&mut self) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        Ok(child.wait()?.success())
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
