//! Forking to every binding in parallel (RFC 3261 §16.7, RFC 6026).

use crate::support::{Answer, Net};
use fieldmesh_sip::message::Message;
use std::time::Duration;

fn two_phones_for_202(
    net: &mut Net,
    a: Answer,
    b: Answer,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let desk = net.phone("10.0.1.3:5080", a);
    let mobile = net.phone("10.0.1.4:5080", b);
    assert_eq!(net.register(desk, "202", "reg-desk", "300"), 200);
    assert_eq!(net.register(mobile, "202", "reg-mobile", "300"), 200);
    (desk, mobile)
}

#[test]
fn both_answers_reach_the_caller_when_two_phones_pick_up() {
    let mut net = Net::new(20);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let (desk, mobile) = two_phones_for_202(
        &mut net,
        Answer::After(Duration::from_secs(1)),
        Answer::After(Duration::from_secs(1)),
    );
    let invite = net.invite_text(alice, "202", "fork2");
    net.send_and_wait_final(alice, &invite);
    let oks: Vec<String> = net
        .phone_ref(alice)
        .received
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) if r.code == 200 => {
                r.common.to.tag.as_ref().map(|t| t.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        oks,
        vec!["tag5080".to_string(), "tag5080".to_string()],
        "both 2xx forwarded"
    );
    assert_eq!(net.phone_ref(desk).methods()[0], "INVITE");
    assert_eq!(net.phone_ref(mobile).methods()[0], "INVITE");
}

#[test]
fn when_one_phone_answers_the_other_is_cancelled() {
    let mut net = Net::new(21);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let (desk, mobile) = two_phones_for_202(
        &mut net,
        Answer::After(Duration::from_secs(1)),
        Answer::RingForever,
    );
    let invite = net.invite_text(alice, "202", "fork1");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    assert_eq!(
        net.phone_ref(mobile).methods(),
        vec!["INVITE", "CANCEL", "ACK"],
        "CANCEL, then ACK of its 487"
    );
    assert_eq!(net.phone_ref(desk).methods(), vec!["INVITE"]);
    assert_eq!(
        net.phone_ref(alice)
            .codes()
            .iter()
            .filter(|c| **c == 200)
            .count(),
        1
    );
    assert!(
        !net.phone_ref(alice).codes().contains(&487),
        "the 487 stays inside the proxy"
    );
}

#[test]
fn a_busy_phone_and_a_dead_phone_give_the_caller_the_busy() {
    let mut net = Net::new(22);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    two_phones_for_202(&mut net, Answer::Reject(486), Answer::Silent);
    let invite = net.invite_text(alice, "202", "fork486");
    // The dead branch times out (Timer B, 32 s) as a 408; 486 is the better final (§16.7).
    assert_eq!(net.send_and_wait_final(alice, &invite), 486);
}

#[test]
fn a_decline_everywhere_6xx_cancels_the_other_branches() {
    let mut net = Net::new(23);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let (_, mobile) = two_phones_for_202(&mut net, Answer::Reject(603), Answer::RingForever);
    let invite = net.invite_text(alice, "202", "fork603");
    assert_eq!(net.send_and_wait_final(alice, &invite), 603);
    assert!(
        net.phone_ref(mobile)
            .methods()
            .contains(&"CANCEL".to_string())
    );
}
