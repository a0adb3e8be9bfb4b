//! A proxy forwards methods it does not know (RFC 3261 §16.3, issue 3).

use fieldmesh_tests::node::Node;
use fieldmesh_tests::sipp::{self, Sipp};

#[test]
fn a_foo_request_to_a_registered_phone_reaches_it_and_its_200_comes_back() {
    let node = Node::start();
    let eve = Sipp::new("foo_uas").spawn();
    sipp::register(node.sip, "eve", eve.port());
    Sipp::new("foo_uac")
        .to(node.sip)
        .service("eve")
        .run()
        .expect_success(1);
    eve.wait().expect_success(1);
}
