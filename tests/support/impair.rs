//! A userspace impairment hop. This kernel has no netem (NOTES.md §2.2), so delay, jitter,
//! reordering and loss come from a forwarder between two TAP devices.
//!
//! [`Hop::start`] creates TAP devices `left` and `right` in a namespace (the lab puts them in
//! its mesh namespace, each on a bridge) and one thread that copies every Ethernet frame from
//! one to the other. Each frame is dropped with probability `loss_pct`, or else held for
//! `delay_ms ± jitter_ms` (uniform) and written when it is due. Frames leave in due-time order,
//! so jitter reorders them as a real path would. Each direction has its own RNG seeded from
//! `seed`, so a run's choices depend only on the seed and the order frames arrive in. The hop
//! counts what it actually did ([`HopStats`]: loss, delay quantiles, reordering) and prints
//! that when it stops. Delays are kept to about 1 ms, because `poll(2)` waits in milliseconds.
//!
//! The lab uses it through [`crate::lab::Lab::impaired_link`]. The media issue and the
//! benchmarks reuse it.

use crate::lab::enter_netns;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a hop does to every frame, in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Mean one-way delay added to each frame.
    pub delay_ms: u32,
    /// Each frame's delay is `delay_ms` plus a uniform value in `±jitter_ms` (never below 0).
    pub jitter_ms: u32,
    /// Chance, in percent, that a frame is dropped.
    pub loss_pct: f64,
    /// Seed of the loss and delay choices.
    pub seed: u64,
}

/// What one direction of a hop actually did.
#[derive(Clone, Debug, Default)]
pub struct DirectionStats {
    /// Frames read from the input TAP.
    pub frames: u64,
    /// Frames dropped on purpose.
    pub dropped: u64,
    /// Frames written to the output TAP.
    pub forwarded: u64,
    /// Frames written after a frame that arrived later than them.
    pub reordered: u64,
    /// Writes the output TAP refused.
    pub write_errors: u64,
    /// Time each forwarded frame spent in the hop, in microseconds (first million frames).
    pub delays_us: Vec<u64>,
}

impl DirectionStats {
    /// Share of frames dropped, in percent.
    pub fn loss_pct(&self) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            self.dropped as f64 * 100.0 / self.frames as f64
        }
    }

    /// The `q` quantile (0.0-1.0) of the achieved delay, in milliseconds.
    pub fn delay_ms(&self, q: f64) -> Option<f64> {
        let mut d = self.delays_us.clone();
        d.sort_unstable();
        let last = d.len().checked_sub(1)?;
        Some(d[((last as f64) * q).round() as usize] as f64 / 1000.0)
    }

    /// The mean achieved delay, in milliseconds.
    pub fn mean_delay_ms(&self) -> Option<f64> {
        let n = self.delays_us.len();
        (n > 0).then(|| self.delays_us.iter().sum::<u64>() as f64 / n as f64 / 1000.0)
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        write!(
            f,
            "{} frames, {} dropped ({:.2} %), {} reordered, delay ms min {} p50 {} mean {} p99 {} \
             max {}",
            self.frames,
            self.dropped,
            self.loss_pct(),
            self.reordered,
            ms(self.delay_ms(0.0)),
            ms(self.delay_ms(0.5)),
            ms(self.mean_delay_ms()),
            ms(self.delay_ms(0.99)),
            ms(self.delay_ms(1.0)),
        )?;
        if self.write_errors > 0 {
            write!(f, ", {} write errors", self.write_errors)?;
        }
        Ok(())
    }
}

/// What a hop achieved in both directions, next to what it was asked for.
#[derive(Clone, Debug, Default)]
pub struct HopStats {
    pub impairment: Impairment,
    pub left_to_right: DirectionStats,
    pub right_to_left: DirectionStats,
}

impl fmt::Display for HopStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.impairment;
        writeln!(
            f,
            "asked: delay {} ± {} ms, loss {} %, seed {}",
            i.delay_ms, i.jitter_ms, i.loss_pct, i.seed
        )?;
        writeln!(f, "  left → right: {}", self.left_to_right)?;
        write!(f, "  right → left: {}", self.right_to_left)
    }
}

/// A running impairment hop between two TAP devices. Dropping it stops the forwarder (the TAP
/// devices vanish with its file descriptors) and prints what it achieved.
pub struct Hop {
    name: String,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<HopStats>>,
    thread: Option<JoinHandle<()>>,
}

impl Hop {
    /// Creates TAP devices `left` and `right` in namespace `netns` and starts forwarding between
    /// them. The caller puts the devices on bridges and sets them up (`ip -n NS link set ...`).
    /// Panics, naming the missing capability, if TAP devices cannot be made.
    pub fn start(netns: &str, left: &str, right: &str, impairment: Impairment) -> Hop {
        let name = format!("hop {left}↔{right} in {netns}");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(HopStats {
            impairment,
            ..HopStats::default()
        }));
        let (ready, started) = mpsc::channel();
        let thread = {
            let (netns, left, right) = (netns.to_string(), left.to_string(), right.to_string());
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("hop {left}"))
                .spawn(move || {
                    enter_netns(&netns);
                    match (open_tap(&left), open_tap(&right)) {
                        (Ok(l), Ok(r)) => {
                            let _ = ready.send(Ok(()));
                            forward([l, r], impairment, &stop, &stats);
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .expect("spawn hop thread")
        };
        match started.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "{name}: cannot create TAP devices through /dev/net/tun: {e}. The lab's \
                 impairment hop needs TAP support (CONFIG_TUN, /dev/net/tun) and root"
            ),
            Err(e) => panic!("{name}: the forwarder thread did not start: {e}"),
        }
        Hop {
            name,
            stop,
            stats,
            thread: Some(thread),
        }
    }

    /// What the hop has done so far.
    pub fn stats(&self) -> HopStats {
        self.stats.lock().expect("hop stats").clone()
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        eprintln!("{}: {}", self.name, self.stats());
    }
}

/// `struct ifreq` as TUNSETIFF reads it: a 16-byte name, the flags, padding to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// `_IOW('T', 202, int)` from `<linux/if_tun.h>`.
const TUNSETIFF: nix::libc::Ioctl = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// Opens `/dev/net/tun` non-blocking and makes it TAP device `name` (Ethernet frames, no
/// packet-info header) in the calling thread's network namespace.
#[allow(unsafe_code)]
fn open_tap(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() > 15 {
        return Err(io::Error::other(format!(
            "interface name {name:?} must be 1-15 bytes"
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes back one `struct ifreq`; `IfReq` has that layout and
    // size (40 bytes on Linux), and `req` outlives the call. The fd is open for the call.
    let rc = unsafe { nix::libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// splitmix64: a small, seeded, good-enough generator (no `rand` in the test build).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A frame waiting in the hop: (due, arrival order, arrival time, bytes), ordered by due time.
type Held = Reverse<(Instant, u64, Instant, Vec<u8>)>;

const MAX_DELAY_SAMPLES: usize = 1_000_000;

/// The forwarder loop: `taps[d]` feeds direction `d`, which writes to `taps[1 - d]`.
fn forward(taps: [File; 2], imp: Impairment, stop: &AtomicBool, stats: &Mutex<HopStats>) {
    let mut rng = [
        Rng(imp.seed ^ 0x6c65_6674),
        Rng(imp.seed ^ 0x0072_6967_6874),
    ];
    let mut queues: [BinaryHeap<Held>; 2] = [BinaryHeap::new(), BinaryHeap::new()];
    let mut arrived = [0u64; 2];
    let mut latest_sent: [Option<u64>; 2] = [None, None];
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let next_due = queues
            .iter()
            .filter_map(|q| q.peek().map(|Reverse(f)| f.0))
            .min();
        // Wake for the next due frame (rounded up to whole ms), and at least every 100 ms to
        // notice `stop`.
        let wait_ms = next_due.map_or(100, |due| {
            let us = due.saturating_duration_since(now).as_micros();
            us.div_ceil(1000).min(100) as u16
        });
        let readable = {
            let mut fds = [
                PollFd::new(taps[0].as_fd(), PollFlags::POLLIN),
                PollFd::new(taps[1].as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
                Ok(_) => fds.map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN))),
                Err(_) => [false, false],
            }
        };
        for d in 0..2 {
            if !readable[d] {
                continue;
            }
            loop {
                let n = match (&taps[d]).read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let at = Instant::now();
                let mut s = stats.lock().expect("hop stats");
                let dir = if d == 0 {
                    &mut s.left_to_right
                } else {
                    &mut s.right_to_left
                };
                dir.frames += 1;
                if rng[d].unit() * 100.0 < imp.loss_pct {
                    dir.dropped += 1;
                    continue;
                }
                let jitter_us = i64::from(imp.jitter_ms) * 1000;
                let offset = if jitter_us > 0 {
                    (rng[d].next_u64() % (2 * jitter_us as u64 + 1)) as i64 - jitter_us
                } else {
                    0
                };
                let delay_us = (i64::from(imp.delay_ms) * 1000 + offset).max(0) as u64;
                let due = at + Duration::from_micros(delay_us);
                queues[d].push(Reverse((due, arrived[d], at, buf[..n].to_vec())));
                arrived[d] += 1;
            }
        }
        let now = Instant::now();
        for d in 0..2 {
            while queues[d].peek().is_some_and(|Reverse(f)| f.0 <= now) {
                let Some(Reverse((_, order, at, frame))) = queues[d].pop() else {
                    break;
                };
                let written = (&taps[1 - d]).write(&frame);
                let mut s = stats.lock().expect("hop stats");
                let dir = if d == 0 {
                    &mut s.left_to_right
                } else {
                    &mut s.right_to_left
                };
                if written.is_err() {
                    dir.write_errors += 1;
                    continue;
                }
                dir.forwarded += 1;
                if latest_sent[d].is_some_and(|latest| order < latest) {
                    dir.reordered += 1;
                }
                latest_sent[d] = latest_sent[d].max(Some(order));
                if dir.delays_us.len() < MAX_DELAY_SAMPLES {
                    dir.delays_us
                        .push(Instant::now().duration_since(at).as_micros() as u64);
                }
            }
        }
    }
}
