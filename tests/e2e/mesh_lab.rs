//! The multi-appliance lab itself (issue 4), checked with plain UDP probes and no daemon:
//! addresses, the shared phone subnet, routing through B on the line, multicast stopping at B,
//! partition and heal, the impairment hop's achieved figures, and cleanup after a kill -9.

use fieldmesh_tests::impair::Impairment;
use fieldmesh_tests::lab::{Lab, PHONE_IP, PHONE_SIDE_IP, UdpEcho, in_netns, probe};
use fieldmesh_tests::node::NodeOptions;
use fieldmesh_tests::wait::wait_until;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

const ECHO_PORT: u16 = 4999;

fn at(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), ECHO_PORT)
}

#[test]
fn appliances_on_one_bridge_reach_each_other_and_each_phone_reaches_only_its_own_appliance() {
    let lab = Lab::new("lab-bridge");
    let [a, b, c] = ["a", "b", "c"].map(|n| lab.appliance(n));
    assert_eq!(
        [a.mesh_ip(), b.mesh_ip(), c.mesh_ip()],
        [[10, 99, 0, 1], [10, 99, 0, 2], [10, 99, 0, 3]].map(Ipv4Addr::from)
    );
    let _echo_c = UdpEcho::start(&c.netns, at(c.mesh_ip()), "c-mesh");
    let seen = probe(&a.netns, at(c.mesh_ip()), 5, Duration::from_millis(5));
    assert_eq!(seen.rtts.len(), 5, "A → C over the bridge: {seen:?}");

    // The same phone-side address on every appliance: a phone reaches its own appliance only.
    let _phone_side = [&a, &c].map(|x| UdpEcho::start(&x.netns, at(PHONE_SIDE_IP), &x.name));
    for x in [&a, &c] {
        let seen = probe(
            &x.phone_netns,
            at(PHONE_SIDE_IP),
            3,
            Duration::from_millis(5),
        );
        assert_eq!(
            seen.tags,
            [x.name.clone()].into(),
            "{}'s phone: {seen:?}",
            x.name
        );
    }
    // An appliance sending to 10.42.0.2 reaches its own phone, never another appliance's.
    let _phone_c = UdpEcho::start(&c.phone_netns, at(PHONE_IP), "c-phone");
    let seen = probe(&a.netns, at(PHONE_IP), 3, Duration::from_millis(5));
    assert!(seen.rtts.is_empty(), "A reached C's phone: {seen:?}");
}

#[test]
fn on_the_line_a_reaches_c_only_through_b_and_multicast_stops_at_b() {
    let lab = Lab::new("lab-line");
    let [a, b, c] = lab.line();
    let _echo = UdpEcho::start(&c.netns, at(c.mesh_ip()), "c");
    let seen = probe(&a.netns, at(c.mesh_ip()), 5, Duration::from_millis(5));
    assert_eq!(seen.rtts.len(), 5, "A → C through B: {seen:?}");

    // A datagram to the mDNS group from A reaches B's left interface but not C.
    let (group, port) = (Ipv4Addr::new(224, 0, 0, 251), ECHO_PORT + 1);
    let listen = |netns: &str, iface: Ipv4Addr| {
        in_netns(netns, || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind");
            s.join_multicast_v4(&group, &iface).expect("join group");
            s.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            s
        })
    };
    let (on_b, on_c) = (
        listen(&b.netns, b.mesh[0].ip),
        listen(&c.netns, c.mesh_ip()),
    );
    in_netns(&a.netns, || {
        // Bound to its mesh address, the datagram leaves through mesh0 (A has no other route).
        let s = UdpSocket::bind((a.mesh_ip(), 0)).expect("bind");
        s.send_to(b"hello group", (group, port)).expect("send");
    });
    let mut buf = [0u8; 64];
    assert!(on_b.recv(&mut buf).is_ok(), "B did not hear A's multicast");
    assert!(
        on_c.recv(&mut buf).is_err(),
        "C heard A's multicast across B"
    );
}

#[test]
fn a_partitioned_appliance_is_unreachable_until_its_link_is_up_again() {
    let lab = Lab::new("lab-partition");
    let [a, c] = ["a", "c"].map(|n| lab.appliance(n));
    let _echo = UdpEcho::start(&c.netns, at(c.mesh_ip()), "c");
    lab.link_down(&c);
    let seen = probe(&a.netns, at(c.mesh_ip()), 3, Duration::from_millis(5));
    assert!(
        seen.rtts.is_empty(),
        "C answered while partitioned: {seen:?}"
    );
    lab.link_up(&c);
    // Bounded: ARP for C was left unanswered, so the first probes may still go nowhere.
    wait_until("C to answer after heal", Duration::from_secs(5), || {
        let seen = probe(&a.netns, at(c.mesh_ip()), 1, Duration::ZERO);
        (!seen.rtts.is_empty()).then_some(())
    });
}

#[test]
fn the_impairment_hop_delays_drops_and_reorders_frames_and_reports_what_it_achieved() {
    let lab = Lab::new("lab-impair");
    let asked = Impairment {
        delay_ms: 20,
        jitter_ms: 5,
        loss_pct: 5.0,
        seed: 7,
    };
    let far = lab.impaired_link(&lab.mesh(), asked);
    let a = lab.appliance("a");
    let c = lab.appliance_on("c", &[&far]);
    let _echo = UdpEcho::start(&c.netns, at(c.mesh_ip()), "c");
    // Let ARP settle through the hop (it may lose ARP frames too).
    wait_until(
        "C to answer through the hop",
        Duration::from_secs(10),
        || {
            let seen = probe(&a.netns, at(c.mesh_ip()), 1, Duration::ZERO);
            (!seen.rtts.is_empty()).then_some(())
        },
    );
    let before = lab.hop_stats(&far);
    let seen = probe(&a.netns, at(c.mesh_ip()), 400, Duration::from_millis(2));
    let hop = lab.hop_stats(&far);
    let mut rtts: Vec<f64> = seen.rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    rtts.sort_by(f64::total_cmp);
    eprintln!(
        "probes: {} sent, {:.1} % lost round trip, rtt ms min {:.1} p50 {:.1} max {:.1}, {} \
         answers reordered\nhop: {hop}",
        seen.sent,
        seen.loss_pct(),
        rtts[0],
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1],
        seen.reordered
    );
    // Deterministic properties only: no frame leaves before delay - jitter, and the loss
    // the hop achieved lies within 4 sigma of what was asked (binomial).
    let floor_ms = 2.0 * f64::from(asked.delay_ms - asked.jitter_ms);
    assert!(
        rtts[0] >= floor_ms,
        "an answer came in {} ms < {floor_ms} ms",
        rtts[0]
    );
    for dir in [&hop.left_to_right, &hop.right_to_left] {
        let n = dir.frames as f64;
        let p = asked.loss_pct / 100.0;
        let sigma = (n * p * (1.0 - p)).sqrt();
        // Probes one way, the answers to those that got through the other way.
        assert!(n >= 300.0, "the hop saw only {n} frames one way");
        assert!(
            (dir.dropped as f64 - n * p).abs() <= 4.0 * sigma,
            "dropped {} of {n} frames, asked {} %",
            dir.dropped,
            asked.loss_pct
        );
        assert!(dir.delay_ms(0.0).expect("delays") >= f64::from(asked.delay_ms - asked.jitter_ms));
    }
    // The probes cannot lose fewer than the hop dropped in this burst, nor answer more.
    let dropped = hop.left_to_right.dropped + hop.right_to_left.dropped
        - before.left_to_right.dropped
        - before.right_to_left.dropped;
    assert!(seen.sent - seen.rtts.len() <= dropped as usize);
}

#[test]
fn a_new_lab_removes_what_a_killed_run_left_behind() {
    // A run that died without Drop: its PID is gone, its namespace and a process in it stay.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let dead_pid = gone.id();
    gone.wait().expect("wait true");
    let netns = format!("fmlab-{dead_pid}-0-a");
    let added = Command::new("ip").args(["netns", "add", &netns]).status();
    assert!(
        added.is_ok_and(|s| s.success()),
        "ip netns add {netns}: needs root"
    );
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &netns, "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn a process in the leftover namespace");
    // `ip netns exec` execs `sleep`; wait until it is in the namespace. A lab starting in a
    // parallel test may clean it up first, which ends the process as well.
    let pid = leftover.id().to_string();
    wait_until(
        "the leftover process in its namespace",
        Duration::from_secs(5),
        || {
            let pids = Command::new("ip")
                .args(["netns", "pids", &netns])
                .output()
                .ok()?;
            let inside = String::from_utf8_lossy(&pids.stdout)
                .split_whitespace()
                .any(|p| p == pid);
            (inside || leftover.try_wait().ok()?.is_some()).then_some(())
        },
    );

    let _lab = Lab::new("lab-cleanup");
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&netns),
        "{netns} survived Lab::new"
    );
    let status = wait_until(
        "the leftover process to be killed",
        Duration::from_secs(5),
        || leftover.try_wait().expect("try_wait"),
    );
    eprintln!("leftover process ended: {status}");
}

#[test]
fn a_node_without_mesh_runs_in_an_appliance_namespace_and_its_phones_call_through_10_42_0_1() {
    let lab = Lab::new("lab-node");
    let a = lab.appliance("a");
    let node = lab.start_node(
        &a,
        NodeOptions {
            extra_args: vec!["--no-mesh".into()],
            ..NodeOptions::default()
        },
    );
    let bob = a.phone("uas_proxy").spawn();
    a.register("bob", bob.port(), 120);
    assert_eq!(node.bound_aors(), vec!["bob".to_string()]);
    let call = a.caller("uac_proxy").service("bob").pause_ms(100).run();
    call.expect_success(1);
    let bob = bob.wait();
    bob.expect_success(1);
    let invite = bob
        .received()
        .into_iter()
        .find(|m| m.starts_with("INVITE"))
        .expect("INVITE");
    assert!(
        invite.contains("10.42.0.2"),
        "the INVITE did not come from the phone: {invite}"
    );
}
