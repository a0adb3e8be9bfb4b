//! The Pi case: the daemon starts before its mesh interface (bat0) has an address. It serves
//! its phones meanwhile, and joins the overlay as soon as the address arrives.

use fieldmesh_tests::lab::{Lab, ROUTE_WAIT, wait_neighbours, wait_route};
use fieldmesh_tests::node::NodeOptions;
use std::process::Command;
use std::time::Duration;

fn ip(netns: &str, args: &[&str]) {
    let status = Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .status()
        .expect("run ip");
    assert!(status.success(), "ip -n {netns} {args:?} failed");
}

#[test]
fn an_appliance_whose_mesh_address_arrives_late_joins_the_overlay_when_it_does() {
    let lab = Lab::new("mesh-late");
    let apps = ["a", "c"].map(|n| lab.appliance(n));
    let [a, c] = &apps;
    // Take C's mesh address away before its daemon starts, as on a Pi before bat0 is up.
    let port = &c.mesh[0];
    let cidr = format!("{}/24", port.ip);
    ip(&c.netns, &["addr", "del", &cidr, "dev", &port.ifname]);
    let na = lab.start_node(a, NodeOptions::default());
    let nc = lab.start_node(c, NodeOptions::default());
    // Meanwhile C serves its own phone.
    let inbox = c
        .phone("uas_message")
        .timeout(Duration::from_secs(60))
        .spawn();
    c.register("303", inbox.port(), 300);
    assert!(
        nc.status()["peers"].as_array().is_none_or(|p| p.is_empty()),
        "no overlay yet"
    );
    // The address arrives: C joins, and A can route to C's phone.
    ip(&c.netns, &["addr", "add", &cidr, "dev", &port.ifname]);
    wait_neighbours(&[&na, &nc], Duration::from_secs(10));
    wait_route(&na, "303", &nc, c.mesh_sip(), ROUTE_WAIT, |_| true);
    a.caller("message").service("303").run().expect_success(1);
    inbox.wait().expect_success(1);
}
