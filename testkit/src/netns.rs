//! A test network of Linux network namespaces: one namespace per node, each with a veth pair onto one
//! bridge in the root namespace, and an nftables table per namespace that the nemesis fills with drop
//! rules to cut links between nodes (both ways or one way) and empties to heal them.
//!
//! Addresses: the bridge (the test process, i.e. the clients) is `10.a.b.1`, node `i` is `10.a.b.(10+i)`
//! in a /24 chosen at random from 10.128.0.0/9 so parallel tests do not collide. Clients on the bridge
//! are never cut off: a partition is between nodes, as in a data centre where the front end can still
//! reach both sides.
//!
//! Needs root (CI runs as root), `ip` (iproute2) and `nft` (nftables). Everything is removed on drop;
//! namespaces left behind by a test process that died are removed by the next one (their names carry the
//! creator's pid).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The nftables table each node's namespace carries for the nemesis.
const TABLE: &str = "trestle_nemesis";
const PREFIX: &str = "trestle-";

/// Whether this machine can build a [`Network`] (root, `ip` and `nft` present).
pub fn available() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && which("ip") && which("nft")
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

/// Runs `program args`, failing with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `nft -f -` in namespace `ns` with `script` on stdin.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A bridge and one network namespace per node.
pub struct Network {
    tag: String,
    subnet: [u8; 3],
    nodes: usize,
    bridge: String,
}

impl Network {
    /// Builds the namespaces of `nodes` nodes (ids 1..=nodes) on a fresh bridge.
    pub fn create(nodes: usize) -> anyhow::Result<Network> {
        if !available() {
            bail!("network namespaces need root, `ip` (iproute2) and `nft` (nftables)");
        }
        sweep_orphans();
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let subnet = [
            10,
            128 + rand::random::<u8>() % 128,
            rand::random::<u8>().max(1),
        ];
        let net = Network {
            bridge: format!("trb{tag}"),
            tag,
            subnet,
            nodes,
        };
        net.build().inspect_err(|_| net.teardown())?;
        Ok(net)
    }

    fn build(&self) -> anyhow::Result<()> {
        let host = format!("{}/24", self.host_ip());
        run("ip", &["link", "add", &self.bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &host, "dev", &self.bridge])?;
        run("ip", &["link", "set", &self.bridge, "up"])?;
        for id in 1..=self.nodes as u64 {
            let ns = self.namespace(id);
            let veth = format!("trv{}{id}", self.tag);
            let addr = format!("{}/24", self.ip(id));
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &self.bridge, "up"])?;
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str()];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            exec(&["ip", "addr", "add", &addr, "dev", "eth0"])?;
            exec(&["ip", "link", "set", "eth0", "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
            nft(
                &ns,
                &format!(
                    "table inet {TABLE} {{\n  chain input {{ type filter hook input priority 0; policy accept; }}\n}}\n"
                ),
            )?;
        }
        Ok(())
    }

    /// The namespace of node `id`.
    pub fn namespace(&self, id: u64) -> String {
        format!("{PREFIX}{}-{}-{id}", std::process::id(), self.tag)
    }

    /// Node `id`'s address.
    pub fn ip(&self, id: u64) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 10 + id as u8)
    }

    /// The address of the test process on the bridge (where clients connect from).
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// A command that runs `program` inside node `id`'s namespace.
    pub fn command(&self, id: u64, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.namespace(id)]).arg(program);
        c
    }

    /// Drops every packet node `from` sends to node `to` (a one-way cut; `to`'s packets still reach
    /// `from`).
    pub fn cut_one_way(&self, from: u64, to: u64) -> anyhow::Result<()> {
        nft(
            &self.namespace(to),
            &format!(
                "add rule inet {TABLE} input ip saddr {} drop\n",
                self.ip(from)
            ),
        )
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&self, a: u64, b: u64) -> anyhow::Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Splits the nodes into `side` and the rest: no packet crosses between them.
    pub fn partition(&self, side: &[u64]) -> anyhow::Result<()> {
        for &a in side {
            for b in 1..=self.nodes as u64 {
                if !side.contains(&b) {
                    self.cut(a, b)?;
                }
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        for id in 1..=self.nodes as u64 {
            nft(
                &self.namespace(id),
                &format!("flush chain inet {TABLE} input\n"),
            )?;
        }
        Ok(())
    }

    fn teardown(&self) {
        for id in 1..=self.nodes as u64 {
            let _ = run("ip", &["netns", "del", &self.namespace(id)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes namespaces (and their bridges) whose creating test process no longer exists.
fn sweep_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(tag)) = (parts.next(), parts.next()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = run("ip", &["netns", "del", name]);
        let _ = run("ip", &["link", "del", &format!("trb{tag}")]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a TCP connection from node `from`'s namespace to `to_addr` succeeds within a second.
    fn connects(net: &Network, from: u64, to: std::net::SocketAddr) -> bool {
        // bash's /dev/tcp gives a connect without extra tools; `timeout` bounds it.
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.namespace(from),
                "timeout",
                "1",
                "bash",
                "-c",
            ])
            .arg(format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port()))
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn cuts_and_heals_links_between_namespaces() {
        assert!(
            available(),
            "these tests need root, iproute2 and nftables (scripts/test.sh installs them)"
        );
        let net = Network::create(3).unwrap();
        // A listener in node 2's namespace, started through a shell so it lives in that namespace.
        let mut listener = net
            .command(2, Path::new("/usr/bin/python3"))
            .args([
                "-c",
                "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',7000))\ns.listen(64)\nprint('up',flush=True)\nwhile True:\n  c,_=s.accept()\n  c.close()",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(listener.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "up");
        let target = std::net::SocketAddr::from((net.ip(2), 7000));
        assert!(connects(&net, 1, target), "1 -> 2 before any cut");
        assert!(
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(1))
                .is_ok(),
            "the test process reaches node 2 over the bridge"
        );
        net.cut_one_way(1, 2).unwrap();
        assert!(!connects(&net, 1, target), "1 -> 2 after the one-way cut");
        assert!(connects(&net, 3, target), "3 -> 2 is not cut");
        net.heal().unwrap();
        assert!(connects(&net, 1, target), "1 -> 2 after heal");
        net.partition(&[1]).unwrap();
        assert!(!connects(&net, 1, target), "1 is isolated");
        assert!(connects(&net, 3, target), "the majority side still talks");
        assert!(
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(1))
                .is_ok(),
            "clients are never cut off"
        );
        let _ = listener.kill();
        let _ = listener.wait();
        let names: Vec<String> = (1..=3).map(|i| net.namespace(i)).collect();
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for n in names {
            assert!(!list.contains(&n), "{n} removed on drop");
        }
    }
}
