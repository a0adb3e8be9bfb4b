//! sip ↔ media glue: the SIP core's [`sip::Media`] over the relay of `fieldmesh-media`.
//!
//! The relay is one value shared by two tasks behind one mutex: the SIP task rewrites SDP
//! synchronously while it forwards a request (it cannot wait for another task mid-input), and
//! the media driver feeds it packets. Each holds the lock for microseconds; after the SIP side
//! changed it, the media driver is woken to look at the new deadline.

use bytes::Bytes;
use media::relay::{CallReport, Relay, Toward};
use media::sdp::SdpError;
use sip::MediaRefusal;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// Figures of calls that ended, newest last, for the status API.
pub(crate) const RECENT_CALLS: usize = 100;

/// What the SIP task and the media driver share.
pub(crate) struct Shared {
    pub(crate) relay: Relay,
    pub(crate) recent: VecDeque<CallReport>,
}

/// The handle both sides hold.
#[derive(Clone)]
pub(crate) struct MediaPlane {
    pub(crate) shared: Arc<Mutex<Shared>>,
    /// Wakes the media driver's timer after the SIP side changed the relay.
    pub(crate) wake: Arc<Notify>,
}

impl MediaPlane {
    pub(crate) fn new(relay: Relay) -> MediaPlane {
        MediaPlane {
            shared: Arc::new(Mutex::new(Shared {
                relay,
                recent: VecDeque::new(),
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Live calls and the last ones that ended.
    pub(crate) fn reports(&self) -> (Vec<CallReport>, Vec<CallReport>) {
        let shared = self.lock();
        (
            shared.relay.reports(Instant::now()),
            shared.recent.iter().cloned().collect(),
        )
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding the lock is a bug already reported; the relay's state is
        // still the best there is.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the relay said, as a command for the SIP core. A recording becomes a voicemail here:
/// the id and the date are the appliance's (the relay has neither a clock nor randomness).
pub(crate) fn command(news: crate::driver::media::MediaNews) -> sip::Command {
    use crate::driver::media::MediaNews;
    match news {
        MediaNews::End(call_id) => sip::Command::EndCall { call_id },
        MediaNews::Mailbox(action) => sip::Command::Mailbox { action },
        MediaNews::Recorded {
            mailbox,
            from,
            audio,
            duration,
        } => sip::Command::VoicemailRecorded {
            voicemail: sip::StoredVoicemail {
                id: sip::item_id(&mailbox, crate::run::seed()),
                aor: mailbox,
                from,
                date: httpdate::fmt_http_date(std::time::SystemTime::now()),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                audio: audio.into(),
                heard: false,
            },
        },
    }
}

fn refusal(e: SdpError) -> MediaRefusal {
    let (code, reason) = e.status();
    MediaRefusal {
        code,
        reason: reason.to_string(),
        retry_after: e.is_overload().then_some(5),
    }
}

impl sip::Media for MediaPlane {
    fn rewrite(
        &mut self,
        now: Instant,
        call_id: &str,
        sender_tag: &str,
        body: &[u8],
        toward: sip::Toward,
    ) -> Result<Bytes, MediaRefusal> {
        let result = self.lock().relay.handle_sdp(
            now,
            call_id,
            sender_tag,
            body,
            Toward {
                ip: toward.ip,
                phone: toward.phone,
            },
        );
        self.wake.notify_one();
        result.map_err(|e| {
            tracing::info!(call_id, error = %e, "SDP refused");
            refusal(e)
        })
    }

    fn echo(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
    ) -> Result<Bytes, MediaRefusal> {
        let result = self.lock().relay.handle_echo_offer(now, call_id, body, ip);
        self.wake.notify_one();
        result.map_err(refusal)
    }

    fn record(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        mailbox: &str,
        from: &str,
    ) -> Result<Bytes, MediaRefusal> {
        let label = media::relay::RecordingLabel {
            mailbox: mailbox.to_string(),
            from: from.to_string(),
        };
        let result = self
            .lock()
            .relay
            .handle_record_offer(now, call_id, body, ip, label);
        self.wake.notify_one();
        result.map_err(refusal)
    }

    fn play(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        messages: &[sip::StoredVoicemail],
    ) -> Result<Bytes, MediaRefusal> {
        let items = messages
            .iter()
            .map(|m| media::voicemail::PlaybackItem {
                id: m.id.clone(),
                audio: m.audio.to_vec(),
            })
            .collect();
        let result = self
            .lock()
            .relay
            .handle_playback_offer(now, call_id, body, ip, items);
        self.wake.notify_one();
        result.map_err(refusal)
    }

    fn end(&mut self, now: Instant, call_id: &str) {
        self.lock().relay.end(now, call_id);
        self.wake.notify_one();
    }

    fn has_call(&self, call_id: &str) -> bool {
        self.lock().relay.has_call(call_id)
    }
}
