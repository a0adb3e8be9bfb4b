//! Our own tone generator and detector for the softphone tests: write a sine WAV for a phone to
//! play, read back what another phone recorded, and measure how much of its power sits at one
//! frequency (Goertzel) and how loud it is (RMS).
//!
//! Deliberately independent of the appliance's media code, so a bug there cannot hide from it.
//! The Goertzel filter runs over 100 ms blocks and the powers are summed: a jitter buffer or
//! packet-loss concealment that shifts the phase now and then costs one block a little, where a
//! single filter over the whole file would lose the coherence and several dB.

use std::path::Path;

/// Decoded audio of a WAV's first channel, as samples in [-1, 1].
#[derive(Clone, Debug)]
pub struct Audio {
    /// Samples per second.
    pub rate: u32,
    /// Channels in the file (only the first is kept).
    pub channels: u16,
    /// The first channel.
    pub samples: Vec<f64>,
}

impl Audio {
    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate)
    }

    /// The samples after the first `secs` seconds (empty if the file is shorter).
    pub fn after(&self, secs: f64) -> &[f64] {
        let skip = (secs * f64::from(self.rate)) as usize;
        self.samples.get(skip..).unwrap_or(&[])
    }
}

/// What [`analyse`] found in a recording.
#[derive(Clone, Debug)]
pub struct ToneReport {
    /// Seconds analysed (after the skipped start).
    pub seconds: f64,
    /// Sample rate and channel count of the file.
    pub rate: u32,
    pub channels: u16,
    /// RMS of the analysed part, relative to full scale.
    pub rms: f64,
    /// Share of the analysed power at the frequency, in dB (0 dB: all of it).
    pub share_db: f64,
}

impl std::fmt::Display for ToneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s at {} Hz × {} ch, RMS {:.3} FS, tone {:.1} dB of total",
            self.seconds, self.rate, self.channels, self.rms, self.share_db
        )
    }
}

/// How much of the start of a recording [`analyse`] skips (codec and jitter-buffer start-up).
pub const SKIP_SECONDS: f64 = 0.5;

/// Writes a 16-bit mono WAV of `seconds` of a sine at `freq` Hz with peak `amplitude` (0..1).
pub fn write_sine(path: &Path, rate: u32, freq: f64, seconds: f64, amplitude: f64) {
    write_wav(path, rate, &sine(rate, freq, seconds, amplitude));
}

/// A sine at `freq` Hz with peak `amplitude`, as samples in [-1, 1].
pub fn sine(rate: u32, freq: f64, seconds: f64, amplitude: f64) -> Vec<f64> {
    let n = (seconds * f64::from(rate)) as usize;
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    (0..n).map(|i| amplitude * (w * i as f64).sin()).collect()
}

/// Writes samples in [-1, 1] as a 16-bit mono WAV.
pub fn write_wav(path: &Path, rate: u32, samples: &[f64]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for &s in samples {
        w.write_sample(to_i16(s)).expect("write WAV sample");
    }
    w.finalize().expect("finalize WAV");
}

fn to_i16(s: f64) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Reads a WAV (integer or float samples, any channel count) and keeps its first channel.
///
/// A data chunk that claims more than the file holds is read up to the end of the file:
/// linphonec 5.1 writes the file's size there, not the data's.
pub fn read_wav(path: &Path) -> Result<Audio, hound::Error> {
    let mut r = hound::WavReader::open(path)?;
    let spec = r.spec();
    let channels = spec.channels.max(1);
    let all: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let full = f64::from(1u32 << (spec.bits_per_sample - 1));
            up_to_eof(r.samples::<i32>().map(|s| s.map(|v| f64::from(v) / full)))?
        }
        hound::SampleFormat::Float => up_to_eof(r.samples::<f32>().map(|s| s.map(f64::from)))?,
    };
    let samples = all
        .chunks_exact(usize::from(channels))
        .map(|frame| frame[0])
        .collect();
    Ok(Audio {
        rate: spec.sample_rate,
        channels,
        samples,
    })
}

/// Collects samples until the file ends, even where the header promised more.
fn up_to_eof(
    samples: impl Iterator<Item = Result<f64, hound::Error>>,
) -> Result<Vec<f64>, hound::Error> {
    let mut out = Vec::new();
    for s in samples {
        match s {
            Ok(v) => out.push(v),
            // hound reports the short read as `Other("Failed to read enough bytes.")`.
            Err(hound::Error::IoError(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Root mean square of `x` (0 for no samples).
pub fn rms(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
}

/// Power at `freq` in one block (Goertzel), scaled so a sine of peak A gives A²/2, its mean
/// square, when the block holds a whole number of its periods.
pub fn goertzel_power(x: &[f64], rate: u32, freq: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = x.len() as f64;
    (s1 * s1 + s2 * s2 - k * s1 * s2) * 2.0 / (n * n)
}

/// Share of the power of `x` at `freq`, in dB: Goertzel over 100 ms blocks, summed, divided by
/// the total power. 0 dB for a pure tone, very negative for anything else; −∞ for silence.
pub fn tone_share_db(x: &[f64], rate: u32, freq: f64) -> f64 {
    let block = (rate as usize / 10).max(1);
    let (mut tone, mut total) = (0.0, 0.0);
    for b in x.chunks_exact(block) {
        tone += goertzel_power(b, rate, freq);
        total += b.iter().map(|v| v * v).sum::<f64>() / b.len() as f64;
    }
    if total <= 0.0 {
        return f64::NEG_INFINITY;
    }
    10.0 * (tone.max(1e-30) / total).log10()
}

/// Reads `path` and measures `freq` in it, skipping the first [`SKIP_SECONDS`].
pub fn analyse(path: &Path, freq: f64) -> ToneReport {
    analyse_after(path, freq, SKIP_SECONDS)
}

/// Reads `path` and measures `freq` in it, skipping the first `skip` seconds.
pub fn analyse_after(path: &Path, freq: f64, skip: f64) -> ToneReport {
    let audio = read_wav(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let x = audio.after(skip);
    ToneReport {
        seconds: x.len() as f64 / f64::from(audio.rate),
        rate: audio.rate,
        channels: audio.channels,
        rms: rms(x),
        share_db: tone_share_db(x, audio.rate, freq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_tone_is_found_and_another_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tone.wav");
        write_sine(&path, 48_000, 1000.0, 3.0, 0.5);
        let r = analyse(&path, 1000.0);
        assert!(r.share_db > -0.1, "1 kHz in a 1 kHz tone: {r}");
        assert!(
            (r.rms - 0.5 / 2f64.sqrt()).abs() < 0.005,
            "RMS of a 0.5 sine: {r}"
        );
        assert!((r.seconds - 2.5).abs() < 0.01, "skips 0.5 s: {r}");
        for other in [440.0, 950.0, 1100.0, 3000.0] {
            let r = analyse(&path, other);
            assert!(r.share_db <= -40.0, "{other} Hz in a 1 kHz tone: {r}");
        }
    }

    #[test]
    fn rates_other_than_48k_work() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tone8k.wav");
        write_sine(&path, 8000, 440.0, 2.0, 0.5);
        assert!(analyse(&path, 440.0).share_db > -0.1);
        assert!(analyse(&path, 1000.0).share_db <= -40.0);
    }

    #[test]
    fn phase_jumps_and_gaps_cost_little() {
        // What a jitter buffer does: drop 7 ms here, insert 30 ms of silence there.
        let rate = 48_000;
        let mut x = sine(rate, 1000.0, 1.0, 0.5);
        x.extend(sine(rate, 1000.0, 1.0, 0.5).into_iter().skip(333));
        x.extend(std::iter::repeat_n(0.0, 1440));
        x.extend(sine(rate, 1000.0, 1.0, 0.5).into_iter().skip(111));
        assert!(tone_share_db(&x, rate, 1000.0) > -1.0);
    }

    #[test]
    fn silence_and_noise_are_not_a_tone() {
        assert_eq!(
            tone_share_db(&[0.0; 48_000], 48_000, 1000.0),
            f64::NEG_INFINITY
        );
        // A deterministic pseudo-random noise: its power is spread over the band.
        let mut s: u32 = 12345;
        let noise: Vec<f64> = (0..48_000)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                f64::from((s >> 16) as u16) / 32768.0 - 1.0
            })
            .collect();
        assert!(tone_share_db(&noise, 48_000, 1000.0) < -20.0);
        assert_eq!(rms(&[]), 0.0);
    }

    #[test]
    fn a_data_chunk_longer_than_the_file_is_read_to_its_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("long-header.wav");
        write_sine(&path, 48_000, 1000.0, 1.0, 0.5);
        // What linphonec writes: the data chunk's size is the whole file's.
        let mut bytes = std::fs::read(&path).expect("read");
        let file_len = u32::try_from(bytes.len()).expect("small file");
        bytes[40..44].copy_from_slice(&file_len.to_le_bytes());
        std::fs::write(&path, bytes).expect("write");
        let audio = read_wav(&path).expect("lenient read");
        assert_eq!(audio.samples.len(), 48_000);
    }

    #[test]
    fn stereo_files_keep_the_first_channel() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("create");
        for (l, r) in sine(48_000, 1000.0, 2.0, 0.5)
            .into_iter()
            .zip(sine(48_000, 440.0, 2.0, 0.25))
        {
            w.write_sample(to_i16(l)).expect("left");
            w.write_sample(to_i16(r)).expect("right");
        }
        w.finalize().expect("finalize");
        let audio = read_wav(&path).expect("read");
        assert_eq!((audio.channels, audio.samples.len()), (2, 96_000));
        let r = analyse(&path, 1000.0);
        assert!(r.share_db > -0.1 && (r.rms - 0.3536).abs() < 0.005, "{r}");
    }
}
