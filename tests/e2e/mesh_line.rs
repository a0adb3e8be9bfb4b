//! Issue 4, story 2: the line A–B–C. A and C share no link (mDNS does not cross B), so A can
//! learn of C's phones only through the overlay; the call from A's phone still reaches C's.
//!
//! B is on both links, so the lab starts it with one `--mesh-interface` per link
//! (`--mesh-interface mesh0 --mesh-interface mesh1`). With mDNS on one link only, the appliance
//! on the other link would find nobody at all.

use fieldmesh_tests::lab::{
    Lab, ROUTE_WAIT, assert_mesh_addresses_only, assert_through_two_appliances,
    check_neighbour_times, connected_peers, wait_neighbours, wait_route,
};
use fieldmesh_tests::node::NodeOptions;
use std::time::Duration;

#[test]
fn on_a_line_a_learns_of_cs_phone_through_the_overlay_and_calls_it() {
    let lab = Lab::new("mesh-line");
    let apps = lab.line();
    let [a, _b, c] = &apps;
    let nodes = apps
        .each_ref()
        .map(|x| lab.start_node(x, NodeOptions::default()));
    let [na, nb, nc] = &nodes;
    check_neighbour_times(&wait_neighbours(&[na, nb], Duration::from_secs(10)));
    check_neighbour_times(&wait_neighbours(&[nb, nc], Duration::from_secs(10)));

    let c_phone = c
        .phone("uas_proxy")
        .timeout(Duration::from_secs(40))
        .spawn();
    c.register("301", c_phone.port(), 300);
    // C's address on its own link (10.99.1.2), reached through B.
    wait_route(na, "301", nc, c.mesh_sip(), ROUTE_WAIT, |_| true);
    eprintln!(
        "A connected to C directly: {}",
        connected_peers(&na.status()).contains(&nc.peer_id())
    );

    a.caller("uac_proxy")
        .service("301")
        .pause_ms(200)
        .run()
        .expect_success(1);
    let got = c_phone.wait();
    got.expect_success(1);
    assert_through_two_appliances(&got.received(), &["INVITE", "ACK", "BYE"], a.mesh_ip());
    nodes.iter().for_each(assert_mesh_addresses_only);
}
