//! The multi-appliance lab (STYLE.md §9). Each appliance is a network namespace, and the mesh is
//! a Linux bridge in a namespace of its own. Behind each appliance is a phone namespace.
//!
//! ```text
//!  phone ns  fmlab-P-L-a-ph      appliance ns  fmlab-P-L-a           mesh ns  fmlab-P-L-mesh
//!  phone0 10.42.0.2/24 ──veth── phone0 10.42.0.1/24
//!                               mesh0  10.99.0.N/24  ──veth──  a-m0 ∈ br0   (no addresses)
//! ```
//!
//! - **One phone subnet everywhere.** Every appliance is 10.42.0.1 on its phone side and every
//!   phone namespace is 10.42.0.2, as on the real appliances. A phone-side address that leaks
//!   into what an appliance tells the mesh therefore points at the wrong phone, or at none.
//! - **Links.** A link is a bridge in the mesh namespace with its own 10.99.K.0/24
//!   ([`Lab::link`]). [`Lab::line`] builds A–B–C: A and C are on different bridges, B is on both
//!   and forwards IP (only inside B's namespace), and A and C route to each other through B.
//!   Multicast (mDNS) does not cross B. [`Lab::impaired_link`] adds a bridge on the same subnet,
//!   joined to another bridge through an [`impair::Hop`](crate::impair::Hop).
//! - **Partition.** [`Lab::link_down`] takes the bridge end of the appliance's mesh veth off
//!   its bridge. The appliance's own interface stays up, with its address and carrier, as a
//!   batman-adv interface does when its neighbours go out of range: only silence tells the
//!   daemon. [`Lab::link_up`] puts it back.
//! - **Names.** Namespaces are `fmlab-<pid>-<lab#>-<role>`, so they are unique per run.
//!   Interfaces are created inside the lab's namespaces (`ip -n`) and never exist in the host's
//!   namespace, so their short fixed names (`mesh0`, `phone0`, `br0`, `a-m0`) cannot clash with
//!   anything. Host interfaces, routes and bridges are never touched.
//! - **Cleanup.** `Drop` kills whatever still runs in the lab's namespaces (only the lab's own
//!   nodes and phones can be there) and deletes the namespaces. The veths and TAPs go with them.
//!   kill -9 skips `Drop`, so [`Lab::new`] first does the same for namespaces whose run's
//!   process no longer exists.
//! - **Reaching inside.** Processes run under `ip netns exec NS`, which execs, so the PID we
//!   hold is the program's. The test's own sockets (status API client, UDP probes, traps) are
//!   made on a short-lived thread that has entered the namespace with setns(2) ([`in_netns`]);
//!   a socket stays in the namespace it was made in. Each node's status API listens on
//!   127.0.0.1:8080 inside its appliance namespace, so it cannot be reached from the mesh or the
//!   phones, and stays reachable while the appliance is partitioned.

use crate::impair::{Hop, HopStats, Impairment};
use crate::node::{Node, NodeOptions};
use crate::sipp::Sipp;
use crate::wait::{wait_until, wait_until_why};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every appliance's phone-side address.
pub const PHONE_SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
/// Every phone namespace's address.
pub const PHONE_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 2);
/// SIP port on both sides of every appliance (`--sip-listen 0.0.0.0:5060`).
pub const SIP_PORT: u16 = 5060;
/// Overlay TCP port (`--mesh-listen 0.0.0.0:7070`).
pub const MESH_PORT: u16 = 7070;
/// Status API inside each appliance namespace.
pub const API: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// Where phones send SIP: their appliance's phone side.
pub const PHONE_SIDE_SIP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(PHONE_SIDE_IP, SIP_PORT));

const PREFIX: &str = "fmlab-";
static LABS: AtomicUsize = AtomicUsize::new(0);

/// One mesh link: a bridge in the lab's mesh namespace and its IPv4 /24 (10.99.`subnet`.0/24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub bridge: String,
    pub subnet: u8,
}

impl Link {
    /// `10.99.K.0/24`.
    pub fn net(&self) -> String {
        format!("10.99.{}.0/24", self.subnet)
    }
}

/// An appliance's interface on one mesh link.
#[derive(Clone, Debug)]
pub struct MeshPort {
    /// Its name inside the appliance namespace (`mesh0`, `mesh1`).
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub link: Link,
    /// The veth end in the mesh namespace, on `link.bridge` unless the link is down.
    pub bridge_port: String,
}

/// One appliance: its namespace, its phone namespace and its mesh interfaces.
#[derive(Clone, Debug)]
pub struct Appliance {
    pub name: String,
    pub netns: String,
    pub phone_netns: String,
    pub mesh: Vec<MeshPort>,
}

impl Appliance {
    /// Address on its first mesh link: what other appliances must use.
    pub fn mesh_ip(&self) -> Ipv4Addr {
        self.mesh[0].ip
    }

    /// Its SIP address as other appliances reach it: `mesh_ip:5060`.
    pub fn mesh_sip(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.mesh_ip()), SIP_PORT)
    }

    /// A sipp phone in this appliance's phone namespace (10.42.0.2, a fresh port). Add
    /// `.to(PHONE_SIDE_SIP)` to make it a caller.
    pub fn phone(&self, scenario: &str) -> Sipp {
        Sipp::new(scenario).in_netns(&self.phone_netns, IpAddr::V4(PHONE_IP))
    }

    /// A sipp caller in the phone namespace, sending to this appliance (10.42.0.1:5060).
    pub fn caller(&self, scenario: &str) -> Sipp {
        self.phone(scenario).to(PHONE_SIDE_SIP)
    }

    /// Registers extension `user` at this appliance with Contact 10.42.0.2:`contact_port`
    /// (a phone's port); panics with sipp's logs unless the appliance answers 200.
    #[track_caller]
    pub fn register(&self, user: &str, contact_port: u16, expires: u32) {
        self.caller("register")
            .service(user)
            .key("cport", contact_port)
            .key("expires", expires)
            .run()
            .expect_success(1);
    }

    /// Registers extension `user` with display name `name` in From and To, as a phone set up
    /// with its owner's name does.
    #[track_caller]
    pub fn register_named(&self, user: &str, name: &str, contact_port: u16, expires: u32) {
        self.caller("register_named")
            .service(user)
            .key("name", name)
            .key("cport", contact_port)
            .key("expires", expires)
            .run()
            .expect_success(1);
    }

    /// Registers like a real phone refreshing: the same `call_id` every time and a growing
    /// `cseq` (`tests/sipp/register_callid.xml`).
    #[track_caller]
    pub fn register_as(
        &self,
        user: &str,
        contact_port: u16,
        expires: u32,
        call_id: &str,
        cseq: u32,
    ) {
        self.caller("register_callid")
            .service(user)
            .key("cport", contact_port)
            .key("expires", expires)
            .arg("-cid_str")
            .arg(call_id)
            .key("regseq", cseq)
            .run()
            .expect_success(1);
    }
}

#[derive(Default)]
struct State {
    namespaces: Vec<String>,
    links: Vec<Link>,
    /// Next host number per subnet.
    hosts: BTreeMap<u8, u8>,
    hops: Vec<(Link, Hop)>,
}

/// A lab: namespaces, bridges and veths created for one test, removed when it is dropped.
pub struct Lab {
    pub name: String,
    prefix: String,
    /// The namespace that holds the bridges (and the impairment hops' TAP devices).
    pub mesh_netns: String,
    started: Instant,
    state: Mutex<State>,
}

impl Lab {
    /// A lab with one mesh link (`br0`, 10.99.0.0/24) and no appliance yet. First removes
    /// what labs of dead runs left behind. Panics, naming what is missing, without root or
    /// iproute2.
    pub fn new(name: &str) -> Lab {
        cleanup_leftovers();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{PREFIX}{}-{n}", std::process::id());
        let lab = Lab {
            name: name.to_string(),
            mesh_netns: format!("{prefix}-mesh"),
            prefix,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        };
        lab.add_netns(&lab.mesh_netns);
        // Bridges need no addresses; without IPv6 the bridge ports stay silent.
        sysctl(&lab.mesh_netns, "net.ipv6.conf.all.disable_ipv6=1");
        sysctl(&lab.mesh_netns, "net.ipv6.conf.default.disable_ipv6=1");
        lab.link();
        eprintln!("lab {name}: namespaces {}-*", lab.prefix);
        lab
    }

    /// The first link (`br0`, 10.99.0.0/24).
    pub fn mesh(&self) -> Link {
        self.state().links[0].clone()
    }

    /// A new link: bridge `brK` with subnet 10.99.K.0/24.
    pub fn link(&self) -> Link {
        let k = self.state().links.len();
        let subnet = u8::try_from(k).expect("at most 255 links");
        self.add_bridge(subnet)
    }

    /// A new bridge on `base`'s subnet, joined to `base` through an impairment hop: appliances
    /// on it reach those on `base` through delay, jitter and loss.
    pub fn impaired_link(&self, base: &Link, impairment: Impairment) -> Link {
        let link = self.add_bridge(base.subnet);
        let k = link.bridge.trim_start_matches("br");
        let (left, right) = (format!("hop{k}a"), format!("hop{k}b"));
        let hop = Hop::start(&self.mesh_netns, &left, &right, impairment);
        ip(&format!(
            "-n {} link set {left} master {} up",
            self.mesh_netns, base.bridge
        ));
        ip(&format!(
            "-n {} link set {right} master {} up",
            self.mesh_netns, link.bridge
        ));
        wait_until(
            &format!("hop ports {left} and {right} to forward"),
            Duration::from_secs(5),
            || self.forwarding(&[&left, &right]).then_some(()),
        );
        self.state().hops.push((link.clone(), hop));
        link
    }

    /// What the hop behind `link` (from [`Lab::impaired_link`]) achieved so far.
    pub fn hop_stats(&self, link: &Link) -> HopStats {
        let state = self.state();
        let (_, hop) = state
            .hops
            .iter()
            .find(|(l, _)| l == link)
            .unwrap_or_else(|| panic!("{} has no impairment hop", link.bridge));
        hop.stats()
    }

    /// An appliance on the first link.
    pub fn appliance(&self, name: &str) -> Appliance {
        self.appliance_on(name, &[&self.mesh()])
    }

    /// An appliance with one mesh interface per link (`mesh0`, `mesh1`, ...), each given the
    /// next free host address of its link's subnet, and its phone namespace.
    pub fn appliance_on(&self, name: &str, links: &[&Link]) -> Appliance {
        assert!(
            !name.is_empty() && name.len() <= 8 && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "appliance name {name:?}: 1-8 ASCII letters or digits (interface names are ≤ 15 bytes)"
        );
        let netns = format!("{}-{name}", self.prefix);
        let phone_netns = format!("{netns}-ph");
        self.add_netns(&netns);
        self.add_netns(&phone_netns);
        ip(&format!(
            "-n {netns} link add phone0 type veth peer name phone0 netns {phone_netns}"
        ));
        ip(&format!(
            "-n {netns} addr add {PHONE_SIDE_IP}/24 dev phone0"
        ));
        ip(&format!("-n {netns} link set phone0 up"));
        ip(&format!(
            "-n {phone_netns} addr add {PHONE_IP}/24 dev phone0"
        ));
        ip(&format!("-n {phone_netns} link set phone0 up"));
        let mut mesh = Vec::new();
        for (k, link) in links.iter().enumerate() {
            let host = {
                let mut state = self.state();
                let next = state.hosts.entry(link.subnet).or_insert(1);
                let host = *next;
                *next = next.checked_add(1).expect("at most 254 hosts per link");
                host
            };
            let port = MeshPort {
                ifname: format!("mesh{k}"),
                ip: Ipv4Addr::new(10, 99, link.subnet, host),
                link: (*link).clone(),
                bridge_port: format!("{name}-m{k}"),
            };
            ip(&format!(
                "-n {netns} link add {} type veth peer name {} netns {}",
                port.ifname, port.bridge_port, self.mesh_netns
            ));
            ip(&format!(
                "-n {netns} addr add {}/24 dev {}",
                port.ip, port.ifname
            ));
            ip(&format!("-n {netns} link set {} up", port.ifname));
            ip(&format!(
                "-n {} link set {} master {} up",
                self.mesh_netns, port.bridge_port, link.bridge
            ));
            mesh.push(port);
        }
        let appliance = Appliance {
            name: name.to_string(),
            netns,
            phone_netns,
            mesh,
        };
        self.wait_ready(&appliance);
        appliance
    }

    /// Waits (bounded) until every interface of `appliance` is operationally up and its bridge
    /// ports forward. Frames sent earlier are dropped: the first port of a new bridge stays
    /// "disabled" for up to a second after it is set up, which would eat the first ARP request
    /// or mDNS announcement.
    pub fn wait_ready(&self, appliance: &Appliance) {
        let t = Instant::now();
        let mut wanted: Vec<(&str, &str)> = vec![
            (&appliance.netns, "phone0"),
            (&appliance.phone_netns, "phone0"),
        ];
        for port in &appliance.mesh {
            wanted.push((&appliance.netns, &port.ifname));
        }
        let ports: Vec<&str> = appliance
            .mesh
            .iter()
            .map(|p| p.bridge_port.as_str())
            .collect();
        wait_until(
            &format!("{}'s interfaces to be up", appliance.name),
            Duration::from_secs(5),
            || {
                let up = wanted
                    .iter()
                    .all(|(ns, ifname)| operstate(ns, ifname) == "UP");
                (up && self.forwarding(&ports)).then_some(())
            },
        );
        if t.elapsed() > Duration::from_millis(100) {
            eprintln!(
                "lab {}: {} ready after {:.2?}",
                self.name,
                appliance.name,
                t.elapsed()
            );
        }
    }

    /// Whether each of `ports` (in the mesh namespace) is on a bridge, in state forwarding.
    fn forwarding(&self, ports: &[&str]) -> bool {
        let out = Command::new("bridge")
            .args(["-j", "-n", &self.mesh_netns, "link", "show"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `bridge` ({e}): the lab needs iproute2"));
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        ports.iter().all(|port| {
            links
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["ifname"] == *port && l["state"] == "forwarding")
        })
    }

    /// The line A–B–C: A on the first link, C on a second one, B on both with IP forwarding
    /// on in its namespace, and routes on A and C through B. A and C share no link.
    pub fn line(&self) -> [Appliance; 3] {
        let (left, right) = (self.mesh(), self.link());
        let a = self.appliance_on("a", &[&left]);
        let b = self.appliance_on("b", &[&left, &right]);
        let c = self.appliance_on("c", &[&right]);
        self.forward(&b);
        self.route(&a, &right, b.mesh[0].ip);
        self.route(&c, &left, b.mesh[1].ip);
        [a, b, c]
    }

    /// Turns IPv4 forwarding on inside `appliance`'s namespace only.
    pub fn forward(&self, appliance: &Appliance) {
        sysctl(&appliance.netns, "net.ipv4.ip_forward=1");
    }

    /// Routes `link`'s subnet from `appliance` through `via`.
    pub fn route(&self, appliance: &Appliance, link: &Link, via: Ipv4Addr) {
        ip(&format!(
            "-n {} route add {} via {via}",
            appliance.netns,
            link.net()
        ));
    }

    /// Partitions `appliance`: the bridge ends of its mesh veths leave their bridges.
    pub fn link_down(&self, appliance: &Appliance) {
        for port in &appliance.mesh {
            ip(&format!(
                "-n {} link set {} nomaster",
                self.mesh_netns, port.bridge_port
            ));
        }
        eprintln!("lab {}: {} partitioned", self.name, appliance.name);
    }

    /// Heals [`Lab::link_down`]; returns once the ports forward again.
    pub fn link_up(&self, appliance: &Appliance) {
        for port in &appliance.mesh {
            ip(&format!(
                "-n {} link set {} master {}",
                self.mesh_netns, port.bridge_port, port.link.bridge
            ));
        }
        self.wait_ready(appliance);
        eprintln!("lab {}: {} healed", self.name, appliance.name);
    }

    /// Starts `fieldmesh run` inside `appliance`'s namespace: SIP on 0.0.0.0:5060, the status
    /// API on 127.0.0.1:8080 of the namespace, node name = appliance name, and one
    /// `--mesh-interface` per mesh link plus `--mesh-listen 0.0.0.0:7070` (unless
    /// `opts.extra_args` has `--no-mesh`). `opts` adds config TOML and arguments.
    pub fn start_node(&self, appliance: &Appliance, opts: NodeOptions) -> Node {
        let mut opts = opts;
        let toml = opts.config_toml.take().unwrap_or_default();
        opts.config_toml = Some(if toml.contains("[node]") {
            toml
        } else {
            format!("[node]\nname = \"{}\"\n\n{toml}", appliance.name)
        });
        let mut args = Vec::new();
        if !opts.extra_args.iter().any(|a| a == "--no-mesh") {
            for port in &appliance.mesh {
                args.extend(["--mesh-interface".to_string(), port.ifname.clone()]);
            }
            args.extend(["--mesh-listen".to_string(), format!("0.0.0.0:{MESH_PORT}")]);
        }
        args.append(&mut opts.extra_args);
        opts.extra_args = args;
        opts.ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        opts.sip_listen = Some(SocketAddr::new(opts.ip, SIP_PORT));
        opts.api_listen = Some(API);
        opts.netns = Some(appliance.netns.clone());
        opts.label = Some(appliance.name.clone());
        Node::start_with(opts)
    }

    fn add_bridge(&self, subnet: u8) -> Link {
        let bridge = {
            let mut state = self.state();
            let link = Link {
                bridge: format!("br{}", state.links.len()),
                subnet,
            };
            state.links.push(link.clone());
            link.bridge
        };
        ip(&format!(
            "-n {} link add {bridge} type bridge mcast_snooping 0",
            self.mesh_netns
        ));
        ip(&format!("-n {} link set {bridge} up", self.mesh_netns));
        Link { bridge, subnet }
    }

    fn add_netns(&self, netns: &str) {
        self.state().namespaces.push(netns.to_string());
        let out = Command::new("ip").args(["netns", "add", netns]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "ip netns add {netns}: {}. The lab needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) \
                 for network namespaces",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run `ip` ({e}): the lab needs iproute2"),
        }
        ip(&format!("-n {netns} link set lo up"));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.state());
        drop(state.hops);
        for ns in state.namespaces.iter().rev() {
            remove_netns(ns);
        }
        eprintln!("lab {} took {:.1?}", self.name, self.started.elapsed());
    }
}

/// Runs `f` on a thread that has entered network namespace `netns` and returns its result
/// (a panic in `f` is passed on). Sockets made in `f` stay in `netns`.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Moves the calling thread into network namespace `netns` (`/run/netns/NAME`). Call it only on
/// a thread made for the purpose, never on a test's own thread.
pub fn enter_netns(netns: &str) {
    let path = Path::new("/run/netns").join(netns);
    let fd = File::open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e} (is the lab still alive?)", path.display()));
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns into {netns}: {e} (needs root)"));
}

/// `operstate` of interface `ifname` in `netns` ("UP", "DOWN", "LOWERLAYERDOWN", ...).
fn operstate(netns: &str, ifname: &str) -> String {
    let out = Command::new("ip")
        .args(["-j", "-n", netns, "link", "show", "dev", ifname])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): the lab needs iproute2"));
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links[0]["operstate"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs `ip ARGS` (split at spaces: lab names have none), panicking with its stderr if it
/// fails.
fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): the lab needs iproute2"));
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Sets one sysctl inside `netns` (net.* sysctls are per namespace).
fn sysctl(netns: &str, setting: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sysctl", "-qw", setting])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip netns exec .. sysctl` ({e})"));
    assert!(
        out.status.success(),
        "sysctl {setting} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// SIGKILLs every process still in `netns` (only the lab's own can be there), waits a bounded
/// time for them to go, and deletes the namespace. Errors are ignored: this is cleanup.
fn remove_netns(netns: &str) {
    let pids = |ns: &str| -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let left = pids(netns);
    for pid in &left {
        eprintln!("lab cleanup: killing pid {pid} left in {netns}");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if !left.is_empty() {
        // Not wait_until: this runs in Drop, where a second panic would abort the test binary.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids(netns).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = Command::new("ip").args(["netns", "del", netns]).output();
}

/// Removes namespaces `fmlab-<pid>-*` whose run (process `pid`) no longer exists.
fn cleanup_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("lab cleanup: removing {name}, left by dead run {pid}");
            remove_netns(name);
        }
    }
}

// ---- Reading the mesh through the status APIs ----

/// Waits until every node sees every other one as a connected peer. Returns, for each ordered
/// pair, how long after the later of the two processes started the first saw the second; the
/// status APIs are polled together every 50 ms, so that is the resolution.
pub fn wait_neighbours(nodes: &[&Node], timeout: Duration) -> Vec<(String, String, Duration)> {
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id()).collect();
    let mut seen: BTreeMap<(usize, usize), Duration> = BTreeMap::new();
    let pairs = nodes.len() * (nodes.len() - 1);
    let what = format!("{} appliances to see each other", nodes.len());
    wait_until_why(&what, timeout, || {
        let now = Instant::now();
        let views = statuses(nodes);
        for (i, view) in views.iter().enumerate() {
            let connected = connected_peers(view);
            for (j, id) in ids.iter().enumerate() {
                if i != j && connected.contains(id) {
                    let since = nodes[i].started_at().max(nodes[j].started_at());
                    seen.entry((i, j)).or_insert(now.duration_since(since));
                }
            }
        }
        if seen.len() == pairs {
            Ok(())
        } else {
            Err(format!("pairs seen {:?}; statuses {views:?}", seen.keys()))
        }
    });
    seen.into_iter()
        .map(|((i, j), d)| (nodes[i].label.clone(), nodes[j].label.clone(), d))
        .collect()
}

/// The status JSON of every node, fetched in parallel.
pub fn statuses(nodes: &[&Node]) -> Vec<serde_json::Value> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(|| n.status())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Peer ids listed as connected in one status JSON.
pub fn connected_peers(status: &serde_json::Value) -> BTreeSet<String> {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"] == true)
        .filter_map(|p| p["peer_id"].as_str().map(String::from))
        .collect()
}

/// Location records for `aor` in one status JSON that still route (phones > 0), with
/// tombstones left out.
pub fn live_routes<'a>(status: &'a serde_json::Value, aor: &str) -> Vec<&'a serde_json::Value> {
    status["location"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["aor"] == aor && r["phones"].as_u64().unwrap_or(0) > 0)
        .collect()
}

/// Own bindings of `aor` in one status JSON.
pub fn bindings<'a>(status: &'a serde_json::Value, aor: &str) -> Vec<&'a serde_json::Value> {
    status["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["aor"] == aor)
        .collect()
}

/// Waits until `node` routes `aor` to exactly one appliance, `to` (a live record with its
/// peer id and `to_sip`), and `extra` holds for that record; returns how long it took.
pub fn wait_route(
    node: &Node,
    aor: &str,
    to: &Node,
    to_sip: SocketAddr,
    timeout: Duration,
    extra: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let t = Instant::now();
    let peer = to.peer_id();
    let sip = to_sip.to_string();
    let what = format!(
        "{} to route {aor} to {} ({peer}, {sip})",
        node.label, to.label
    );
    wait_until_why(&what, timeout, || {
        let status = node.status();
        let routes = live_routes(&status, aor);
        let ok = routes.len() == 1
            && routes[0]["peer_id"] == peer.as_str()
            && routes[0]["sip"] == sip.as_str()
            && extra(routes[0]);
        if ok {
            Ok(())
        } else {
            Err(format!("{}'s status {status}", node.label))
        }
    });
    let took = t.elapsed();
    eprintln!("{what}: {took:.2?}");
    took
}

// ---- Plain probes, to check the lab itself without the daemon ----

/// A UDP echo server inside a namespace: answers every datagram with `tag` + `:` + the
/// datagram. Stops when dropped.
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(netns: &str, addr: SocketAddr, tag: &str) -> UdpEcho {
        let socket = in_netns(netns, || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("echo bind {addr} in {netns}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, tag) = (stop.clone(), tag.as_bytes().to_vec());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let mut answer = tag.clone();
                        answer.push(b':');
                        answer.extend_from_slice(&buf[..n]);
                        let _ = socket.send_to(&answer, from);
                    }
                }
            })
        };
        UdpEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a burst of UDP probes to a [`UdpEcho`] saw.
#[derive(Debug, Default)]
pub struct Probes {
    pub sent: usize,
    /// Round-trip time of each answered probe, in sequence order.
    pub rtts: Vec<Duration>,
    /// The tags that answered (which echo server got the probes).
    pub tags: BTreeSet<String>,
    /// Answers that came after an answer to a later probe.
    pub reordered: usize,
}

impl Probes {
    pub fn loss_pct(&self) -> f64 {
        (self.sent - self.rtts.len()) as f64 * 100.0 / self.sent.max(1) as f64
    }
}

/// Sends `count` probes from `netns` to `to`, one every `interval`, and collects the answers
/// until 1 s after the last probe (every wait is a socket timeout; nothing sleeps).
pub fn probe(netns: &str, to: SocketAddr, count: usize, interval: Duration) -> Probes {
    let socket = in_netns(netns, || UdpSocket::bind("0.0.0.0:0")).expect("probe socket");
    let start = Instant::now();
    let mut sent_at = Vec::with_capacity(count);
    let mut answers: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut out = Probes::default();
    let mut highest = None;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        let next_send = start + interval * sent_at.len() as u32;
        if sent_at.len() < count && now >= next_send {
            let _ = socket.send_to(format!("probe {}", sent_at.len()).as_bytes(), to);
            sent_at.push(now);
            continue;
        }
        let until = if sent_at.len() < count {
            next_send
        } else {
            *sent_at.last().unwrap_or(&start) + Duration::from_secs(1)
        };
        if now >= until || answers.len() == count {
            break;
        }
        socket
            .set_read_timeout(Some((until - now).max(Duration::from_millis(1))))
            .expect("read timeout");
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let Some((tag, seq)) = text
            .split_once(":probe ")
            .and_then(|(t, s)| Some((t.to_string(), s.parse::<usize>().ok()?)))
        else {
            continue;
        };
        if seq < sent_at.len() && !answers.contains_key(&seq) {
            answers.insert(seq, Instant::now() - sent_at[seq]);
            out.tags.insert(tag);
            if highest.is_some_and(|h| seq < h) {
                out.reordered += 1;
            }
            highest = highest.max(Some(seq));
        }
    }
    out.sent = sent_at.len();
    out.rtts = answers.into_values().collect();
    out
}

// ---- Issue 4's targets and the checks the stories share ----

/// Neighbours on a bridged link are seen this long after the process starts.
pub const NEIGHBOURS_TARGET: Duration = Duration::from_millis(1200);
/// A graceful stop is seen within this.
pub const GRACEFUL_STOP_TARGET: Duration = Duration::from_secs(2);
/// A silent death is seen within this.
pub const SILENT_DEATH_TARGET: Duration = Duration::from_secs(15);
/// A call to a phone on an appliance that does not answer gets 480 within this.
pub const UNANSWERED_480_TARGET: Duration = Duration::from_secs(5);
/// After a partition heals, a call succeeds within this.
pub const HEAL_TARGET: Duration = Duration::from_secs(10);
/// How long a test waits for a registration to be routable elsewhere (the issue sets no
/// target; the benchmark measures it).
pub const ROUTE_WAIT: Duration = Duration::from_secs(10);

/// Tests wait up to three times a target before failing.
pub fn bound(target: Duration) -> Duration {
    target * 3
}

/// Keeps a scenario's state (a partition) for `duration`, checking `invariant` about every
/// 200 ms. This is the one place a story lets time pass without waiting for a condition: the
/// time is the scenario.
pub fn hold(what: &str, duration: Duration, mut invariant: impl FnMut()) {
    let until = Instant::now() + duration;
    eprintln!("holding {what} for {duration:.1?}");
    loop {
        invariant();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// Prints the neighbour times from [`wait_neighbours`] and fails if one exceeds
/// 3 × [`NEIGHBOURS_TARGET`].
pub fn check_neighbour_times(seen: &[(String, String, Duration)]) {
    for (x, y, d) in seen {
        eprintln!(
            "  {x} saw {y} {:>5} ms after the later start",
            d.as_millis()
        );
    }
    let worst = seen.iter().map(|s| s.2).max().unwrap_or_default();
    eprintln!(
        "neighbours seen: worst {} ms (target {} ms)",
        worst.as_millis(),
        NEIGHBOURS_TARGET.as_millis()
    );
    assert!(
        worst <= bound(NEIGHBOURS_TARGET),
        "a neighbour was seen only after {worst:?}: {seen:?}"
    );
}

/// Waits until none of `watchers` lists `gone` (a peer id) as connected; returns the time since
/// `since`.
pub fn wait_peer_gone(
    watchers: &[&Node],
    gone: &str,
    since: Instant,
    timeout: Duration,
) -> Duration {
    let names: Vec<&str> = watchers.iter().map(|n| n.label.as_str()).collect();
    let what = format!("{names:?} to stop listing {gone} as connected");
    wait_until_why(&what, timeout, || {
        let views = statuses(watchers);
        match views.iter().find(|s| connected_peers(s).contains(gone)) {
            None => Ok(()),
            Some(s) => Err(format!("status {s}")),
        }
    });
    since.elapsed()
}

/// Fails if anything an appliance learnt from the mesh (peer addresses, location records'
/// SIP addresses) holds a phone-side address instead of a 10.99.x.y mesh address.
pub fn assert_mesh_addresses_only(node: &Node) {
    let status = node.status();
    let mut told: Vec<String> = Vec::new();
    for peer in status["peers"].as_array().into_iter().flatten() {
        for addr in peer["addrs"].as_array().into_iter().flatten() {
            told.push(addr.as_str().unwrap_or_default().to_string());
        }
    }
    for record in status["location"].as_array().into_iter().flatten() {
        told.push(record["sip"].as_str().unwrap_or_default().to_string());
    }
    let leaked: Vec<&String> = told.iter().filter(|a| !a.contains("10.99.")).collect();
    assert!(
        leaked.is_empty(),
        "{} learnt non-mesh addresses {leaked:?}: {status}",
        node.label
    );
}

/// The Via header values of one SIP message, top first (`Via:` and compact `v:` lines, split
/// at commas).
pub fn vias(message: &str) -> Vec<String> {
    header_values(message, &["via", "v"])
}

/// The Record-Route values of one SIP message, top first.
pub fn record_routes(message: &str) -> Vec<String> {
    header_values(message, &["record-route"])
}

fn header_values(message: &str, names: &[&str]) -> Vec<String> {
    message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| names.iter().any(|x| n.trim().eq_ignore_ascii_case(x)))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks that a phone received each of `methods` through two appliances: three Vias (the
/// caller, the first appliance, the serving appliance), the first appliance's Via naming its
/// mesh address `first`.
#[track_caller]
pub fn assert_through_two_appliances(received: &[String], methods: &[&str], first: Ipv4Addr) {
    for method in methods {
        let msg = received
            .iter()
            .find(|m| m.starts_with(&format!("{method} ")))
            .unwrap_or_else(|| panic!("the phone never received {method}; it got:\n{received:#?}"));
        let v = vias(msg);
        // "SIP/2.0/UDP 10.99.0.1:5060;branch=..." → "10.99.0.1"
        let host = |via: &str| {
            let sent_by = via.split_whitespace().nth(1).unwrap_or_default();
            sent_by
                .split([':', ';'])
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            v.len() == 3 && host(&v[1]) == first.to_string(),
            "{method} did not come through two appliances with {first} first ({} Vias): \
             {v:?}\n{msg}",
            v.len()
        );
    }
}
