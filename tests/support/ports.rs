//! Free ports on loopback, so tests can run side by side without fixed port numbers.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};

/// Next candidate for [`free_range`]; spreads tests over 20000..60000 and never hands out a port
/// twice in one test process.
static NEXT: AtomicU16 = AtomicU16::new(0);

/// A port free on `ip` for both UDP and TCP (SIP listens on both).
pub fn free_port(ip: IpAddr) -> u16 {
    free_range(ip, 1)
}

/// The first of `n` consecutive ports, each free on `ip` for UDP and TCP.
pub fn free_range(ip: IpAddr, n: u16) -> u16 {
    if NEXT.load(Ordering::Relaxed) == 0 {
        // Start somewhere that depends on the process, so two test binaries rarely collide.
        let seed = 20000 + (std::process::id() % 2000) as u16 * 20;
        let _ = NEXT.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..2000 {
        let mut start = NEXT.fetch_add(n + 1, Ordering::Relaxed);
        if start > 60000 - n {
            NEXT.store(20000, Ordering::Relaxed);
            start = 20000;
        }
        if (start..start + n).all(|p| is_free(SocketAddr::new(ip, p))) {
            return start;
        }
    }
    panic!("no {n} free consecutive ports on {ip}");
}

fn is_free(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok()
}
