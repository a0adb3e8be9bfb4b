//! Issue 4, story 5: roaming. A phone registered on A moves to C with the same settings: same
//! address (10.42.0.2), port and Call-ID. It re-registers there. Within one refresh, C's binding
//! has replaced A's everywhere, a call from B reaches the phone at C, and nothing is forked to
//! A: a socket on the phone's old address behind A sees no INVITE.

use fieldmesh_tests::lab::{
    Lab, PHONE_IP, ROUTE_WAIT, assert_mesh_addresses_only, assert_through_two_appliances, bindings,
    check_neighbour_times, in_netns, live_routes, wait_neighbours, wait_route,
};
use fieldmesh_tests::node::NodeOptions;
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::sipp::LOOPBACK;
use fieldmesh_tests::wait::wait_until_why;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Expires of every registration here.
const EXPIRES: u32 = 60;
/// "Within one refresh": a phone refreshes well before its binding expires, at about half the
/// Expires. A's old binding would lapse by itself only at `EXPIRES`, so meeting this bound
/// shows that C's binding replaced it, not that it expired.
const REFRESH: Duration = Duration::from_secs(EXPIRES as u64 / 2);

#[test]
fn a_phone_that_roams_from_a_to_c_is_reached_at_c_and_nothing_is_forked_to_a() {
    let lab = Lab::new("mesh-roaming");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, b, c] = &apps;
    let nodes = apps
        .each_ref()
        .map(|x| lab.start_node(x, NodeOptions::default()));
    let [na, nb, nc] = &nodes;
    check_neighbour_times(&wait_neighbours(&[na, nb, nc], Duration::from_secs(10)));

    let port = free_port(LOOPBACK);
    let call_id = format!("roaming-{}@10.42.0.2", std::process::id());
    let trap = in_netns(&a.phone_netns, || UdpSocket::bind((PHONE_IP, port)))
        .expect("bind the phone's old address behind A");
    a.register_as("501", port, EXPIRES, &call_id, 1);
    wait_route(nb, "501", na, a.mesh_sip(), ROUTE_WAIT, |_| true);

    // Carried to C: same address, port and Call-ID, next CSeq.
    let phone = c
        .phone("uas_proxy")
        .on_port(port)
        .timeout(Duration::from_secs(90))
        .spawn();
    c.register_as("501", port, EXPIRES, &call_id, 2);
    let roamed = Instant::now();
    wait_route(nb, "501", nc, c.mesh_sip(), REFRESH, |_| true);
    let left = REFRESH.saturating_sub(roamed.elapsed());
    wait_until_why("A to drop its own binding of 501", left, || {
        let s = na.status();
        if bindings(&s, "501").is_empty() {
            Ok(())
        } else {
            Err(format!("A's status {s}"))
        }
    });
    eprintln!(
        "roaming: C's binding replaced A's everywhere after {} ms (bound: one refresh, {REFRESH:?})",
        roamed.elapsed().as_millis()
    );
    let s = nc.status();
    assert_eq!(bindings(&s, "501").len(), 1, "C after roaming: {s}");
    assert!(
        live_routes(&s, "501").is_empty(),
        "C still routes 501 elsewhere: {s}"
    );

    b.caller("uac_proxy")
        .service("501")
        .pause_ms(200)
        .run()
        .expect_success(1);
    let got = phone.wait();
    got.expect_success(1);
    assert_through_two_appliances(&got.received(), &["INVITE"], b.mesh_ip());

    trap.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let mut forked = Vec::new();
    while let Ok(n) = trap.recv(&mut buf) {
        let datagram = String::from_utf8_lossy(&buf[..n]).to_string();
        if datagram.starts_with("INVITE ") {
            forked.push(datagram);
        }
    }
    assert!(
        forked.is_empty(),
        "the phone's old address behind A got: {forked:#?}"
    );
    nodes.iter().for_each(assert_mesh_addresses_only);
}
