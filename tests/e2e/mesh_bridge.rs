//! Issue 4, story 1: three appliances on one bridge find each other, and phones on A and C call
//! and message each other by extension through both appliances. Also measures how soon the
//! neighbours are seen after start, and how soon a graceful stop is seen.

use fieldmesh_tests::lab::{
    GRACEFUL_STOP_TARGET, Lab, ROUTE_WAIT, assert_mesh_addresses_only,
    assert_through_two_appliances, bound, check_neighbour_times, record_routes, wait_neighbours,
    wait_peer_gone, wait_route,
};
use fieldmesh_tests::node::NodeOptions;
use std::time::{Duration, Instant};

#[test]
fn phones_on_a_and_c_call_and_message_each_other_across_three_appliances_on_one_bridge() {
    let lab = Lab::new("mesh-bridge");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, b, c] = &apps;
    let mut nodes = apps
        .each_ref()
        .map(|x| lab.start_node(x, NodeOptions::default()));
    check_neighbour_times(&wait_neighbours(&nodes.each_ref(), Duration::from_secs(10)));

    let hold = Duration::from_secs(60);
    let c_phone = c.phone("uas_proxy").timeout(hold).spawn();
    let c_port = c_phone.port();
    c.register("301", c_port, 300);
    let a_phone = a.phone("uas_proxy").timeout(hold).spawn();
    a.register("101", a_phone.port(), 300);
    wait_route(
        &nodes[0],
        "301",
        &nodes[2],
        c.mesh_sip(),
        ROUTE_WAIT,
        |_| true,
    );
    wait_route(
        &nodes[2],
        "101",
        &nodes[0],
        a.mesh_sip(),
        ROUTE_WAIT,
        |_| true,
    );

    // A's phone calls C's phone: INVITE, ACK and BYE pass A, then C.
    a.caller("uac_proxy")
        .service("301")
        .pause_ms(200)
        .run()
        .expect_success(1);
    let got = c_phone.wait();
    got.expect_success(1);
    let received = got.received();
    assert_through_two_appliances(&received, &["INVITE", "ACK", "BYE"], a.mesh_ip());
    let rr = record_routes(&received[0]);
    for x in [a, c] {
        assert!(
            rr.iter().any(|r| r.contains(&x.mesh_ip().to_string())),
            "no Record-Route with {}'s mesh address: {rr:?}",
            x.name
        );
    }

    // A MESSAGE from A's phone reaches the same phone on C.
    let inbox = c.phone("uas_message").on_port(c_port).spawn();
    a.caller("message").service("301").run().expect_success(1);
    let got = inbox.wait();
    got.expect_success(1);
    assert_through_two_appliances(&got.received(), &["MESSAGE"], a.mesh_ip());

    // C's phone calls back.
    c.caller("uac_proxy")
        .service("101")
        .pause_ms(200)
        .run()
        .expect_success(1);
    let got = a_phone.wait();
    got.expect_success(1);
    assert_through_two_appliances(&got.received(), &["INVITE", "ACK", "BYE"], c.mesh_ip());
    nodes.iter().for_each(assert_mesh_addresses_only);

    // B stops gracefully: A and C see it go.
    let b_id = nodes[1].peer_id();
    let (exit, took) = nodes[1].terminate();
    let sigterm = Instant::now() - took;
    eprintln!("{} exited with {exit} in {took:.2?}", b.name);
    let [na, _, nc] = &nodes;
    let seen = wait_peer_gone(
        &[na, nc],
        &b_id,
        sigterm,
        bound(GRACEFUL_STOP_TARGET) + took,
    );
    eprintln!(
        "graceful stop seen after {} ms (target {} ms)",
        seen.as_millis(),
        GRACEFUL_STOP_TARGET.as_millis()
    );
    assert!(
        seen <= bound(GRACEFUL_STOP_TARGET),
        "graceful stop seen after {seen:?}"
    );
}
