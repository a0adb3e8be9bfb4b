//! Issue 4, bad input from discovery: a neighbour announcing an incompatible protocol version
//! is shown (not silently ignored) and not dialled; malformed mDNS TXT records are ignored with
//! a log line; the appliance keeps working.

use fieldmesh_tests::lab::{Lab, in_netns};
use fieldmesh_tests::node::NodeOptions;
use fieldmesh_tests::wait::wait_until;
use mdns_sd::{ServiceDaemon, ServiceInfo};
use std::time::Duration;

/// A valid-looking libp2p peer id that nobody listens as.
const STRANGER: &str = "12D3KooWHdbneTzPCE9GNbwnAZ8jDwRaWEStP4UFvVbyPjBvAmmw";

#[test]
fn an_incompatible_neighbour_is_shown_not_dialled_and_malformed_announcements_are_ignored() {
    let lab = Lab::new("mesh-bad-neighbours");
    let a = lab.appliance("a");
    let x = lab.appliance("x");
    let node = lab.start_node(&a, NodeOptions::default());
    // X is no appliance: a fake that announces a future protocol version, and a broken record.
    let ip = x.mesh_ip().to_string();
    let iface = x.mesh[0].ifname.clone();
    let _announcer = in_netns(&x.netns, || {
        let mdns = ServiceDaemon::new().expect("mdns daemon");
        mdns.disable_interface(mdns_sd::IfKind::All)
            .expect("disable");
        mdns.enable_interface(mdns_sd::IfKind::Name(iface.clone()))
            .expect("enable");
        let future = [
            ("ver", "99"),
            ("peer", STRANGER),
            ("port", "7070"),
            ("sip", "5060"),
            ("node", "from-the-future"),
        ];
        let mut info = ServiceInfo::new(
            "_fieldmesh._udp.local.",
            "future",
            "future.local.",
            ip.as_str(),
            7070,
            &future[..],
        )
        .expect("service");
        info.set_requires_probe(false);
        mdns.register(info).expect("register");
        let broken = [("ver", "one"), ("peer", "not-a-peer-id")];
        let mut info = ServiceInfo::new(
            "_fieldmesh._udp.local.",
            "broken",
            "broken.local.",
            ip.as_str(),
            7071,
            &broken[..],
        )
        .expect("service");
        info.set_requires_probe(false);
        mdns.register(info).expect("register");
        mdns
    });
    let peer = wait_until(
        "A to list the incompatible neighbour",
        Duration::from_secs(15),
        || {
            let status = node.status();
            status["peers"]
                .as_array()?
                .iter()
                .find(|p| p["peer_id"] == STRANGER)
                .cloned()
        },
    );
    assert_eq!(peer["compatible"], false, "{peer}");
    assert_eq!(peer["version"], 99, "{peer}");
    assert_eq!(peer["connected"], false, "not dialled: {peer}");
    assert_eq!(
        node.status()["peers"].as_array().map(Vec::len),
        Some(1),
        "the broken one is not listed"
    );
    let log = node.log_text();
    assert!(
        log.contains("incompatible protocol version"),
        "logged: {log}"
    );
    assert!(
        log.contains("malformed neighbour announcement"),
        "logged: {log}"
    );
    // Still serving.
    a.caller("options").run().expect_success(1);
}
