//! Registrar stories (RFC 3261 §10.3, issue 3) told with sipp against one node, checked through
//! the node's status API.

use fieldmesh_tests::node::Node;
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::sipp::{self, LOOPBACK, Sipp};
use serde_json::Value;

/// The bindings the status API lists for extension `aor`.
fn bindings(node: &Node, aor: &str) -> Vec<Value> {
    let status = node.status();
    let all = status["bindings"]
        .as_array()
        .expect("status API: bindings array");
    all.iter().filter(|b| b["aor"] == aor).cloned().collect()
}

/// The Contact ports of `aor`'s bindings, sorted.
fn contact_ports(node: &Node, aor: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = bindings(node, aor)
        .iter()
        .map(|b| {
            let contact = b["contact"].as_str().expect("binding contact");
            let port = contact
                .trim_end_matches('>')
                .rsplit(':')
                .next()
                .expect("contact port");
            let port = port.split([';', '>']).next().expect("port digits");
            port.parse()
                .unwrap_or_else(|e| panic!("contact {contact}: port {port}: {e}"))
        })
        .collect();
    ports.sort();
    ports
}

fn register_with_expires(node: &Node, user: &str, port: u16, expires: u32) {
    Sipp::new("register")
        .to(node.sip)
        .service(user)
        .key("cport", port)
        .key("expires", expires)
        .run()
        .expect_success(1);
}

#[test]
fn a_hundred_extensions_register_and_the_status_api_lists_all_of_them() {
    let node = Node::start();
    Sipp::new("register_many")
        .to(node.sip)
        .calls(100)
        .rate(200)
        .run()
        .expect_success(100);
    let mut expected: Vec<String> = (1..=100).map(|i| format!("u{i}")).collect();
    expected.sort();
    assert_eq!(
        node.bound_aors(),
        expected,
        "status API after 100 REGISTERs of u1..u100"
    );
}

#[test]
fn a_register_with_a_malformed_expires_gets_400_and_binds_nothing() {
    let node = Node::start();
    let port = free_port(LOOPBACK);
    Sipp::new("register_bad_expires")
        .to(node.sip)
        .service("mallory")
        .key("cport", port)
        .run()
        .expect_success(1);
    assert_eq!(
        bindings(&node, "mallory"),
        Vec::<Value>::new(),
        "a rejected REGISTER bound something"
    );
}

#[test]
fn a_register_below_the_minimum_gets_423_with_min_expires() {
    let node = Node::start();
    Sipp::new("register_too_brief")
        .to(node.sip)
        .service("quick")
        .key("cport", free_port(LOOPBACK))
        .run()
        .expect_success(1);
    assert_eq!(
        bindings(&node, "quick"),
        Vec::<Value>::new(),
        "a 423'd REGISTER bound something"
    );
}

#[test]
fn a_phone_asking_for_an_hour_is_bound_for_at_most_300_seconds() {
    let node = Node::start();
    register_with_expires(&node, "hour", free_port(LOOPBACK), 3600);
    let b = bindings(&node, "hour");
    assert_eq!(b.len(), 1, "bindings of hour: {b:?}");
    let expires_in = b[0]["expires_in"].as_u64().expect("expires_in is a number");
    assert!(
        (1..=300).contains(&expires_in),
        "expires_in {expires_in} not capped at 300: {b:?}"
    );
}

#[test]
fn a_refresh_with_the_same_call_id_replaces_the_binding_instead_of_adding_one() {
    let node = Node::start();
    let (first, moved) = (free_port(LOOPBACK), free_port(LOOPBACK));
    Sipp::new("register_refresh")
        .to(node.sip)
        .service("carol")
        .key("cport", first)
        .key("cport2", moved)
        .run()
        .expect_success(1);
    assert_eq!(
        contact_ports(&node, "carol"),
        vec![moved],
        "carol's bindings: {:?}",
        bindings(&node, "carol")
    );
}

#[test]
fn expires_zero_removes_that_contact_and_keeps_the_other() {
    let node = Node::start();
    let (desk, mobile) = (free_port(LOOPBACK), free_port(LOOPBACK));
    sipp::register(node.sip, "dave", desk);
    sipp::register(node.sip, "dave", mobile);
    assert_eq!(
        contact_ports(&node, "dave"),
        vec![desk, mobile],
        "two phones, two REGISTER Call-IDs"
    );
    register_with_expires(&node, "dave", desk, 0);
    assert_eq!(
        contact_ports(&node, "dave"),
        vec![mobile],
        "after Expires: 0 for the desk phone"
    );
}

#[test]
fn a_star_contact_with_expires_zero_removes_every_binding_of_the_extension_only() {
    let node = Node::start();
    sipp::register(node.sip, "erin", free_port(LOOPBACK));
    sipp::register(node.sip, "erin", free_port(LOOPBACK));
    sipp::register(node.sip, "frank", free_port(LOOPBACK));
    assert_eq!(
        bindings(&node, "erin").len(),
        2,
        "erin before *: {:?}",
        bindings(&node, "erin")
    );
    Sipp::new("register_star")
        .to(node.sip)
        .service("erin")
        .run()
        .expect_success(1);
    assert_eq!(
        bindings(&node, "erin"),
        Vec::<Value>::new(),
        "erin after Contact: *, Expires: 0"
    );
    assert_eq!(
        bindings(&node, "frank").len(),
        1,
        "frank must keep his binding"
    );
}
